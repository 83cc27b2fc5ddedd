"""Datasets of vae-study: dSprites, HDF5 jets, toy sets, as Ray Data datasets."""
