"""Datasets in the PASCAL VOC layout: reading them (``voc``), checking them (``check``) and
generating a small synthetic one (``synthetic``)."""

from wsk.data.voc import VOCDataset, paper_training_ids, single_label_ids

__all__ = ["VOCDataset", "paper_training_ids", "single_label_ids"]
