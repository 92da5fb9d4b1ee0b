"""The U-Net augmentation benchmark: does adding generated pairs beat standard augmentation and
copy-paste? ``protocol`` fixes the U-Net recipe, ``exposure`` which images each step sees,
``training`` one device-resident training, ``runner`` every (N, setting, seed), ``verdict`` the
paired gains, ``report`` the tables and plots, ``request`` the checked entry point of
`msgnet eval augment`."""
