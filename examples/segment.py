#!/usr/bin/env python3
"""m2n2 from Python: an image, a few clicks, a mask (the Python twin of segment_one.cpp).

    PYTHONPATH=build/python python3 examples/segment.py examples/images/fruit.png 120,172,+ mask.png

Clicks are X,Y,+ (object) or X,Y,- (background) in image pixels. With --sam the same
runs through the SAM-style Predictor."""
import argparse
import sys

import cv2
import numpy as np

import m2n2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("clicks", nargs="+", help="X,Y,+ or X,Y,-")
    ap.add_argument("out", help="mask PNG (0/255)")
    ap.add_argument("--source", default=None, help="as m2n2's --source (default: the embedded default source)")
    ap.add_argument("--sam", action="store_true", help="use m2n2.Predictor (set_image / predict)")
    args = ap.parse_args()

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(args.image + ": cannot read the image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    clicks = []
    for c in args.clicks:
        x, y, sign = c.split(",")
        clicks.append((float(x), float(y), sign == "+"))

    engine = m2n2.Engine(source=args.source, progress=lambda stage, f: print(f"{stage} {f:.0%}", file=sys.stderr))
    if args.sam:
        predictor = m2n2.Predictor(engine)
        predictor.set_image(rgb)
        masks, scores, _ = predictor.predict(point_coords=np.array([c[:2] for c in clicks]),
                                             point_labels=np.array([int(c[2]) for c in clicks]))
        mask = masks[0]
    else:
        session = engine.open(rgb, name=args.image)
        mask = session.segment(clicks).mask
        print(f"prepared in {session.timings['total']:.2f} s", file=sys.stderr)
    cv2.imwrite(args.out, mask.astype(np.uint8) * 255)
    print(f"{args.out}: {int(mask.sum())} pixels", file=sys.stderr)


if __name__ == "__main__":
    main()
