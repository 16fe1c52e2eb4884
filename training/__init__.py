"""Training library: what train.py and demo.py run."""
