"""Multiply-accumulates of ShuffleNet v1 and HarDNet computed by hand from their papers' tables.

Conv + fc MACs only (the project's convention): a conv's output positions x its kernel area x its input channels
per group x its output channels. Used where a published figure counts something else (test_analysis_summary's
KNOWN_CONVENTION_DIFFERENCES) and by the family tests. Written from the papers, not from cnnzoo's modules.
"""

from __future__ import annotations

# ShuffleNet (Zhang et al. 2018) Table 1: output channels of Stages 2-4 for g groups; 1 + 3, 1 + 7, 1 + 3 units.
SHUFFLENET_V1_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                          8: (384, 768, 1536)}


def shufflenet_v1_macs(groups: int, size: int = 224, num_classes: int = 1000) -> int:
    """ShuffleNet 1x: conv1 24 3x3/2, max-pool /2, then units of Fig. 2 (1x1 GConv to out/4, 3x3 depthwise (stride),
    1x1 GConv to out (stride 1) or out - in (stride 2, concatenated with an average pool)); Stage 2's first 1x1
    is not grouped (Sec. 3.3); global pool; fc."""
    s = size // 2
    macs = s * s * 24 * 3 * 9
    s //= 2
    cin = 24
    for stage, (cout, units) in enumerate(zip(SHUFFLENET_V1_CHANNELS[groups], (4, 8, 4))):
        for unit in range(units):
            stride = 2 if unit == 0 else 1
            mid = cout // 4
            g1 = 1 if stage == 0 and unit == 0 else groups
            macs += s * s * (cin // g1) * mid  # first 1x1 (G)Conv, at the input resolution
            s //= stride
            macs += s * s * mid * 9  # 3x3 depthwise
            macs += s * s * (mid // groups) * (cout - cin if stride == 2 else cout)  # second 1x1 GConv
            cin = cout
    return macs + cin * num_classes


# HarDNet (Chao et al. 2019) official models: stem widths, m, and per HDB (layers, growth rate, transition, down).
HARDNET_68 = {"stem": (32, 64), "m": 1.7, "stages": [(8, 14, 128, True), (16, 16, 256, False), (16, 20, 320, True),
                                                      (16, 40, 640, True), (4, 160, 1024, False)]}
HARDNET_85 = {"stem": (48, 96), "m": 1.7, "stages": [(8, 24, 192, True), (16, 24, 256, False), (16, 28, 320, True),
                                                      (16, 36, 480, False), (16, 48, 720, True), (4, 256, 1280, False)]}


def hardnet_macs(arch: dict, size: int = 224, num_classes: int = 1000) -> int:
    """HarDNet: conv 3x3/2, conv 3x3, max-pool 3x3/2; per HDB, layer k (3x3 conv) reads layers k - 2^n (2^n | k) and
    has growth * m^n channels (n the largest such power; the official code rounds to even), the block's output is
    its odd layers and its last; a 1x1 transition conv; a 2x2 max-pool after the down-sampling stages; fc."""
    c0, c1 = arch["stem"]
    s = size // 2
    macs = s * s * 3 * c0 * 9 + s * s * c0 * c1 * 9
    s //= 2
    cin = c1
    for layers, growth, width, down in arch["stages"]:
        widths = [cin]
        for k in range(1, layers + 1):
            links = [k - 2**n for n in range(k.bit_length()) if k % 2**n == 0]
            out = int((growth * arch["m"] ** (len(links) - 1) + 1) / 2) * 2
            macs += s * s * sum(widths[j] for j in links) * out * 9
            widths.append(out)
        block_out = sum(widths[k] for k in range(1, layers + 1) if k % 2 == 1 or k == layers)
        macs += s * s * block_out * width
        s = s // 2 if down else s
        cin = width
    return macs + cin * num_classes
