"""Matching: the PDQ index, exact and perceptual matching, the vPDQ video rule and the robust
(local-feature) tier."""
