"""Designing priors for a data set: how well a config's priors cover its boxes (`priors`,
`ssdkit analyze-priors`) and k-means suggestions for new sizes and aspect ratios (`kmeans`).

Not imported by `import ssdkit.analysis`: the modules load on first use (`ssdkit.analysis.priors`).
"""
