"""Data preparation: phantom chest X-rays, loaders for MIMIC-CXR-JPG, CheXpert and NIH ChestX-ray14,
and the stratified SFT / RL / validation split."""
