"""Level 2: LightGBM and XGBoost over each kind's top-3, trained leave-one-fold-out."""
