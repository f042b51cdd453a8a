"""COCO's compressed RLE counts, decoded from their public definition (pycocotools'
rleFrString), for the tests that check what m2n2 writes."""


def rle_counts(s):
    """The run lengths (zeros first) of a compressed counts string."""
    counts, i = [], 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:  # 5-bit groups, low first; 0x20 = more follow, 0x10 of the last = negative
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:  # from the third on, a difference to the count two before
            x += counts[-2]
        counts.append(x)
    return counts
