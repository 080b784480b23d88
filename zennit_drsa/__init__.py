"""DRSA concept explanations for Zennit, Captum and scikit-learn."""
