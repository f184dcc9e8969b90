"""`make monitor`: recent inputs against each serving version's training inputs (drift), and
recorded outcomes against its held-out figures (live quality), as text and an HTML report."""
