"""The gradient-boosting flavors, XGBoost (``xgboost``) and LightGBM (``lightgbm``), and what they share.

``base`` (the shared flavor shape), ``wrapper_state`` (scikit-learn wrapper state as JSON),
``feature_guard`` (the input guard of models that know their feature names), and the checks of
each library's own model format (``xgboost_trees``, ``xgboost_categories``, ``xgboost_legacy``,
``lightgbm_text``). Importing this package imports neither library.
"""
