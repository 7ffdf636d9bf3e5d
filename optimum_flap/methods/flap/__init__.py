"""FLAP (An et al., AAAI 2024) and the structured baselines wanda-sp and magnitude-sp."""
