"""Files in and out of ssdkit: weights (`weights`: safetensors or checkpoints, read without
unpickling), torchvision's named pretrained weights (`pretrained`), where a model comes from
(`sources`: `ssdkit.load`, `ssdkit.create_model`), other projects' weights (`convert`, `tfod`), and
users' pictures (`pictures`, `picture_files`) and output paths (`paths`).

Nothing is imported here: `ssdkit.io.picture_files` serves the torch-free `ssdkit.runtime`.
"""
