"""Augmentations a segmentation model's training set is compared with: standard
(geometric + intensity, on batches on the device) and copy-paste of annotated objects."""
