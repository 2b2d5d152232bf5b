"""The decoding algorithms behind capgen.models.decoding, written once against the decoder
protocol (see decoders.py):

    settings.py     DecodeSettings: every control, checked
    constraints.py  words a caption may not emit next (min length, repeated n-grams, <unk>)
    stepwise.py     greedy and sampling (temperature, top-k, top-p), one caption per row
    beam.py         batched beam search: n best per image, diverse beam
    results.py      DecodeResult (one caption per image), NBestResult (N per image)
"""
