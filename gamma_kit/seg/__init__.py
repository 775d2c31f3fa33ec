"""GAMMA task 3: optic disc / cup segmentation on PaddleSeg 2.8.0 (the original PaddleX 2 recipe).

Modules (import the one you need; Paddle is only imported where a model is used):
- ``prepare``: GAMMA layout -> JPEGImages/ + Annotations/ (labels 0 cup, 1 rim, 2 background),
  ``split_dataset`` -> train_list.txt / val_list.txt / labels.txt; with ``RoiSettings`` (``prepare --roi``)
  disc-centred, jittered crops of each photo plus ``crops.json`` (stage 2 of the two-stage pipeline).
- ``compat``: tested patches for PaddleSeg 2.8.0 on Paddle 3.x, applied only where the bug shows.
- ``models``: ``LiteUNet`` (a narrow U-Net registered with PaddleSeg, for CPUs).
- ``training``: YAML config -> ``SegBuilder`` + ``paddleseg.core.train`` with input checks.
- ``inference``: model directories, one predictor core (transforms, flip TTA, the two-stage path:
  locate the disc -> ``gamma_kit.crop.DiscCrop`` -> segment -> paste back, for models holding
  ``roi.json``), post-processing, submission zip, overlays. ``export``: static graph + CPU
  ``paddle.inference`` predictor on the same core.
- ``paddlex_api``: the notebook's PaddleX 2 calls (``T.*``, ``SegDataset``, ``UNet().train``,
  ``load_model``). ``demo``: ``run_demo`` end to end (two-stage by default). CLI: ``python -m gamma_kit.seg -h``.

Label maps are (H, W) uint8 0/1/2; GAMMA masks (H, W) uint8 0 cup / 128 rim / 255 background.
"""
