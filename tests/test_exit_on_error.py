"""An error during training ends the `wsk` process at once, with its one line and a non-zero exit.

The script below runs a click command through the real entry point (``wsk.cli.main.main``) that
trains with ``wsk.training.engine.fit`` on a tf.data pipeline whose parallel ``numpy_function`` reads fail
on one element while others are in flight. Before ``exit_now``, the process printed its error and
then hung in interpreter finalisation (tf.data's iterator destructor waiting on the in-flight
calls); this test then hit its timeout.
"""

import os
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent('''
    import sys, time
    import click
    import numpy as np
    from wsk.cli.main import cli, main

    @click.command("faulty-train")
    def faulty_train():
        import keras, tensorflow as tf
        from wsk.errors import WskError
        from wsk.training.engine import epoch_variable, fit

        def read(i):
            if int(i) == 40:
                raise WskError("damaged file (injected)", f"target_{int(i)}.npz")
            time.sleep(0.05)
            return np.full((4,), float(i) % 3, np.float32)

        data = tf.data.Dataset.range(10_000).map(
            lambda i: (tf.ensure_shape(tf.numpy_function(read, [i], tf.float32), [4]), tf.zeros([1])),
            num_parallel_calls=8, deterministic=True).batch(4).prefetch(4)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        out = sys.argv[1]
        fit(model, data, 2, 100, out + "/checkpoints", out + "/logs", epoch_variable(), verbose=0)

    cli.add_command(faulty_train)
    main(["faulty-train"])
''')


def test_an_error_in_the_data_pipeline_ends_the_process_within_seconds(tmp_path):
    script = tmp_path / "faulty.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=env)
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Error: target_40.npz: damaged file (injected)" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 60, f"the process took {elapsed:.0f} s to exit"
