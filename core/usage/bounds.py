"""The price and output bounds, written once: read by the settings at start (prices.py's
parser applies them too), without loading the price table itself."""

from __future__ import annotations

# Output tokens assumed when a request sets no cap and the model's own limit is unknown.
DEFAULT_MAX_OUTPUT = 32_768

# MODEL_PRICES, in USD per 1M tokens: the dearest list price today is a few hundred; past
# this a rate is a typo, and 1e308 would overflow every reservation into inf (a 500 on every
# priced request). Output tokens: the largest model limits are in the hundreds of thousands.
MAX_RATE_USD = 100_000.0
MAX_OUTPUT_LIMIT = 10_000_000

# Input tokens assumed for a request that names input it does not carry (a previous
# response, a file, a video by URL) when the model's context window is unknown: the largest
# window in common use. MODEL_PRICES' max_input sets a model's own, up to MAX_INPUT_LIMIT.
DEFAULT_MAX_INPUT = 2_097_152
MAX_INPUT_LIMIT = 100_000_000
