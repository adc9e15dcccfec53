"""Peak memory of the refinement writer, a localization-map worker and a Beam worker at N images.

    python benchmarks/bench_refinement_memory.py [--sizes 1000 100000] [--dim 256] [--jobs 2]
                                                 [--roles refinement maps beam] [--reuse]
                                                 [--out /tmp/wsk-refinement-memory]

Issue 24's "done when": with 100,000 refinement entries the peak resident memory of each of the
three is within 10% of its peak at 1,000 entries. For each N it writes a synthetic VOC-layout
dataset (the split list and one Annotations XML per image, 1-3 labels; no photographs: nothing
measured reads them) and a work directory with what the stages read, one file per image:
``proposals/<id>.npz`` (12 regions on a 16 x 16 superpixel map) and ``scores/<id>.npz`` (1-6
candidates per label, ``--dim``-dimensional float16 features). Then three roles, each in a fresh
process that reports its peak resident memory, and its largest pool worker's:

* **refinement**: the stage list's entries ``refinement statistics`` and ``refinement`` with
  ``--jobs`` spawned workers. The parent streams the scores for the statistics and submits the
  images; each worker writes ``refined/<id>.json`` records (the refinement writer).
* **maps**: the entry ``localization maps`` likewise; each worker reads one image's record.
* **beam**: ``wsk.pipeline.build_pipeline`` on the DirectRunner (one in-process worker) with its
  per-image steps narrowed to refinement and localization maps (the statistics as Beam combines),
  after the local outputs are removed. Its process is the Beam worker.

It prints the peaks side by side and their ratio between the largest and the smallest N. With
``--jobs 1`` there is no pool: the stage parent is the refinement writer and the map worker.
``--reuse`` keeps a dataset and work directory synthesized before with the same N and ``--dim``.

The peak of a process is its ``VmHWM`` (``/proc/<pid>/status``: the high-water mark of the memory
it has had since it started its program). ``resource.getrusage``'s ``ru_maxrss`` is printed beside it
for the role's own process, but cannot measure a child: Linux carries the parent's high-water mark
over the ``exec`` into the child's ``ru_maxrss`` (measured: a child holding 11 MB reports 525 MB
under a parent that held 525 MB), so the workers' ``ru_maxrss`` would be their stage parent's.

Measured (2 shared, heavily loaded cores; ``python benchmarks/bench_refinement_memory.py --sizes
1000 40000``, 20 minutes in all; peak RSS in MB):

=============================  =======  ========  =====
process                        N=1000   N=40000   ratio
=============================  =======  ========  =====
refinement: stage parent        158.7     157.3   0.992
refinement: writer (worker)     153.3     153.2   1.000
maps: stage parent              153.3     160.0   1.043
maps: worker                    152.3     152.5   1.002
beam: DirectRunner worker       266.5     275.3   1.033
=============================  =======  ========  =====

``python benchmarks/bench_refinement_memory.py --sizes 1000 100000`` (the same machine, running
beside other jobs at low priority; 30 minutes for the roles, 4 for the synthesis):

=============================  =======  =========  =====
process                        N=1000   N=100000   ratio
=============================  =======  =========  =====
refinement: stage parent        158.6      183.9   1.159
refinement: writer (worker)     152.8      153.1   1.002
maps: stage parent              153.1      173.5   1.133
maps: worker                    152.0      152.3   1.002
beam: DirectRunner worker       266.3      304.0   1.141
=============================  =======  =========  =====

The workers were flat. The Beam worker grew by about 380 bytes an image: the DirectRunner held the
ids' PCollection, which three steps read and the refinement waited on. The stage parents grew by 200
to 250 bytes an image (``tracemalloc``: the split's ids, 83 bytes an image, a set of the ids already
done, the report's copies of the ids), so with ``--jobs 1``, where the parent is the writer, the
writer was over 10% too. Then (676ef13):

* the stage parent keeps one byte an image for its done-checks (``wsk.stage_list.run_stage``), not
  a set of ids, and ``wsk.stages.run_per_image`` streams the pending items instead of listing them;
  the report keeps references to the split's own ids;
* duplicate ids are found on a sorted copy of the list (8 bytes an id), not a ``Counter`` (about 60);
* Beam reads the ids in shards (``wsk.pipeline.id_shards``: about 1,000 ids a shard, at most 64),
  and the steps that wait on the statistics read them afresh instead of waiting on one collection of
  every id, so no runner buffers one.

``python benchmarks/bench_refinement_memory.py --sizes 1000 100000`` after them (the same machine,
beside two other jobs; 60 minutes for the roles):

=============================  =======  =========  =====
process                        N=1000   N=100000   ratio
=============================  =======  =========  =====
refinement: stage parent        158.5      178.3   1.125
refinement: writer (worker)     153.2      153.3   1.001
maps: stage parent              153.3      167.1   1.090
maps: worker                    152.4      152.3   0.999
beam: DirectRunner worker       266.4      274.6   1.031
=============================  =======  =========  =====

The workers and the Beam worker were flat. The stage parents still held the split's list of ids
(64 bytes an image: 6.4 MB at 100,000), which every dataset class kept, and transient sorted copies
of it (duplicates, the scores digest); with ``--jobs 1`` the writer is that parent, at 1.125. Then:

* a split's ids are a ``wsk.data.ids.IdList``: one UTF-8 buffer and an 8-byte offset an id (19
  bytes a VOC id), a string made only when one is read;
* ``run_per_image``'s reports are views of the items through a byte of flags an item
  (``wsk.stages.Picked``), not lists of them;
* duplicates and the scores digest sort a string at a time (``IdList.sorted``).

``python benchmarks/bench_refinement_memory.py --sizes 1000 100000 --reuse`` after them (the same
machine, beside short profiling runs; 14 minutes for the roles), then the same with ``--jobs 1 --roles
refinement maps``, where the stage parent is the refinement writer and the map worker:

=====================================  =======  =========  =====
process                                N=1000   N=100000   ratio
=====================================  =======  =========  =====
refinement: stage parent                160.3      165.7   1.034
refinement: writer (worker)             154.5      154.7   1.001
maps: stage parent                      154.8      161.6   1.044
maps: worker                            153.7      153.8   1.000
beam: DirectRunner worker               268.2      279.9   1.044
``--jobs 1``: refinement parent/writer  160.1      167.0   1.044
``--jobs 1``: maps parent/worker        154.9      161.9   1.045
=====================================  =======  =========  =====

Every process is within 5% of its peak at 1,000 images. What the parents still add, 50 to 70
bytes an image, is the C heap that streaming 100,000 files leaves behind, not Python objects:
``tracemalloc`` had found 0.4 MB of them kept after the statistics (before these changes).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
           "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")   # VOC's: the dataset has no classes.txt
ROLES = ("refinement", "maps", "beam")
SIDE, CELLS, REGIONS = 16, 4, 12


def synthesize(root, work, images, dim, seed=0):
    """The dataset and the work directory's proposals and scores for ``images`` images."""
    from wsk.proposals.container import Proposals
    from wsk.pseudo.files import SCORES_VERSION
    from wsk.workdir import WorkDir

    rng = np.random.default_rng(seed)
    wd = WorkDir(work)
    for folder in (os.path.join(root, "ImageSets", "Segmentation"), os.path.join(root, "Annotations"),
                   wd.proposals_dir, wd.scores_dir):
        os.makedirs(folder, exist_ok=True)
    superpixels = (np.arange(SIDE)[:, None] // CELLS) * CELLS + np.arange(SIDE)[None, :] // CELLS
    cells = CELLS * CELLS
    regions = [sorted(rng.choice(cells, size=int(rng.integers(1, cells)), replace=False)) for _ in range(REGIONS)]
    template = os.path.join(work, "template.npz")
    Proposals.from_regions(superpixels, regions).save(template)
    ids = [f"{n:07d}" for n in range(images)]
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    spectrum = 0.97 ** np.arange(dim)
    class_means = rng.normal(size=(len(CLASSES), dim)) * spectrum
    for image_id in ids:
        labels = sorted(rng.choice(np.arange(1, len(CLASSES)), size=int(rng.integers(1, 4)), replace=False))
        objects = "".join(f"<object><name>{CLASSES[k]}</name></object>" for k in labels)
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(f"<annotation>{objects}</annotation>")
        shutil.copyfile(template, wd.proposals(image_id))
        counts = rng.integers(0, 7, size=len(labels))
        candidate_labels = np.repeat(np.array(labels, np.int32), counts)
        candidates = np.concatenate([rng.choice(REGIONS, size=c, replace=False) for c in counts]).astype(np.int32)
        features = class_means[candidate_labels] + rng.normal(size=(len(candidates), dim)) * spectrum
        np.savez(wd.scores(image_id), version=np.int32(SCORES_VERSION),
                 scores=rng.random((REGIONS, len(CLASSES) - 1)).astype(np.float32), candidates=candidates,
                 candidate_labels=candidate_labels, features=np.abs(features).astype(np.float16),
                 mode=np.array("roi"), threshold=np.float32(0.5), inputs=np.array("synthetic"))
    os.remove(template)


def peak_mb(pid="self"):
    """``VmHWM`` of process ``pid`` in MB (module docstring)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0


def workers_peak_mb():
    """The largest ``VmHWM`` of this process's pool workers (its children running ``spawn_main``)."""
    peaks = [0.0]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
            if parent == os.getpid() and b"spawn_main" in command:
                peaks.append(peak_mb(pid))
        except (OSError, StopIteration, ValueError):
            continue   # a process that ended meanwhile
    return max(peaks)


def child(role, root, work, jobs):
    """Run one role in this (fresh) process; returns ``(seconds, its largest worker's peak MB)``."""
    from wsk.pseudo.stage import pseudo_run
    from wsk.stage_list import get_stage, run_stages
    from wsk.stages import worker_pool

    run = pseudo_run(root, work, "train", mode="roi", jobs=jobs)
    start = time.perf_counter()
    if role in ("refinement", "maps"):
        names = ("refinement statistics", "refinement") if role == "refinement" else ("localization maps",)
        with worker_pool(jobs) as pool:
            reports = run_stages(names, run, pool)
            workers = workers_peak_mb()   # before the pool ends its workers
        done = len(reports[names[-1]].done)
        if done != len(run.dataset().ids):
            raise SystemExit(f"{role}: {done} images computed")
    elif role == "beam":
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        import wsk.pipeline

        wsk.pipeline.selected_stages = lambda _: [get_stage("refinement"), get_stage("localization maps")]
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
            wsk.pipeline.build_pipeline(pipeline, run, "pseudo")
        workers = 0.0
        done = len([name for name in os.listdir(run.workdir.locmaps_dir) if not name.startswith(".")])
        if done != len(run.dataset().ids):
            raise SystemExit(f"beam: {done} images computed")
    else:
        raise SystemExit(f"unknown role {role}")
    return time.perf_counter() - start, workers


def measure(role, root, work, jobs):
    """``{seconds, self_mb, workers_mb, ru_maxrss_mb}`` of one role run in a fresh process."""
    command = [sys.executable, os.path.abspath(__file__), "--child", role, "--root", root, "--work", work,
               "--jobs", str(jobs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(os.path.join(work, f"bench-{role}.log"), "w") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{role} failed (see {log.name})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def remove_outputs(work):
    from wsk.workdir import WorkDir

    wd = WorkDir(work)
    for folder in (wd.refined_dir, wd.locmaps_dir):
        shutil.rmtree(folder, ignore_errors=True)
    if os.path.exists(wd.refinement):
        os.remove(wd.refinement)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--out", default="/tmp/wsk-refinement-memory")
    parser.add_argument("--child")
    parser.add_argument("--root")
    parser.add_argument("--work")
    args = parser.parse_args()
    if args.child:
        seconds, workers = child(args.child, args.root, args.work, args.jobs)
        print(json.dumps({"seconds": seconds, "self_mb": peak_mb(), "workers_mb": workers,
                          "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
        return
    results = {}
    for n in args.sizes:
        root, work = os.path.join(args.out, f"data-{n}"), os.path.join(args.out, f"work-{n}")
        marker = os.path.join(work, f"synthesized-{n}-{args.dim}")
        if not (args.reuse and os.path.exists(marker)):
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            start = time.perf_counter()
            synthesize(root, work, n, args.dim)
            open(marker, "w").close()
            print(f"N={n}: synthesized in {time.perf_counter() - start:.0f} s", flush=True)
        results[n] = {}
        for role in args.roles:
            if role in ("refinement", "beam"):   # the maps role reads the refinement role's records
                remove_outputs(work)
            results[n][role] = measure(role, root, work, args.jobs)
            print(f"N={n} {role}: {json.dumps(results[n][role])}", flush=True)
    small, large = args.sizes[0], args.sizes[-1]
    print(f"\n{args.dim}-dimensional features, {args.jobs} workers; peak RSS in MB (VmHWM; ru_maxrss of the "
          "role's own process in the last rows)\n")
    print(f"{'process':<28}" + "".join(f"{f'N={n}':>12}" for n in args.sizes) + f"{'ratio':>8}")
    rows = [("refinement: stage parent", "refinement", "self_mb"), ("refinement: writer (worker)", "refinement", "workers_mb"),
            ("maps: stage parent", "maps", "self_mb"), ("maps: worker", "maps", "workers_mb"),
            ("beam: DirectRunner worker", "beam", "self_mb"), ("refinement parent ru_maxrss", "refinement", "ru_maxrss_mb"),
            ("maps parent ru_maxrss", "maps", "ru_maxrss_mb"), ("beam ru_maxrss", "beam", "ru_maxrss_mb")]
    for label, role, key in rows:
        if role not in args.roles or (key == "workers_mb" and args.jobs <= 1):
            continue
        peaks = [results[n][role][key] for n in args.sizes]
        print(f"{label:<28}" + "".join(f"{p:>12.1f}" for p in peaks) + f"{peaks[-1] / peaks[0]:>8.3f}")
    print(f"{'seconds':<28}" + "".join(f"{sum(r['seconds'] for r in results[n].values()):>12.0f}"
                                       for n in args.sizes) + f"   ({len(args.roles)} roles, N={small}..{large})")


if __name__ == "__main__":
    main()
