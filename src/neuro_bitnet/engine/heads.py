"""How the output layer (the head: n_vocab x n_embd, read once per generated token) runs.

"q4" and "q8" run a 4-bit (per 128-weight group) or int8 (per row) copy of the head built at
load time; it ranks the vocabulary, then the 128 best candidates are recomputed from the file's
own values, so greedy decoding and the top of every sampling distribution see exact logits.
"exact" uses the file's values for every row (slowest: the F16 head is 657 MB for 2B-4T).
"""

HEADS = ("q4", "q8", "exact")
DEFAULT_HEAD = "q4"
