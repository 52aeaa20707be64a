"""ptq4sam.SamAutomaticMaskGenerator against `ptq4sam everything` and the official records."""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

import ptq4sam
from test_predictor import BINARY, FIXTURES, SAM_TINY, require_fixture

# amg/expected.json's grid8_all case: every mask kept, so the comparison is mask by mask.
SETTINGS = dict(points_per_side=8, points_per_batch=24, pred_iou_thresh=-100.0, stability_score_thresh=0.0,
                box_nms_thresh=1.0)


class MaskGenerator(unittest.TestCase):
    def test_records_are_the_binarys_in_every_output_mode(self):
        require_fixture(self)
        image = ptq4sam.read_image(os.path.join(SAM_TINY, "image.jpg"))
        model = ptq4sam.load_model(os.path.join(SAM_TINY, "checkpoint.pth"), threads=2)
        coco = ptq4sam.SamAutomaticMaskGenerator(model, output_mode="coco_rle", **SETTINGS).generate(image)
        with tempfile.TemporaryDirectory() as tmp:
            args = [BINARY, "everything", "--model", os.path.join(SAM_TINY, "checkpoint.pth"), "--image",
                    os.path.join(SAM_TINY, "image.jpg"), "--out", tmp, "--threads", "2"]
            for key, value in SETTINGS.items():
                args += ["--" + key.replace("_", "-"), repr(value)]
            run = subprocess.run(args, capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(os.path.join(tmp, "masks.json")) as f:
                self.assertEqual(coco, json.load(f))
        with open(os.path.join(FIXTURES, "amg", "expected.json")) as f:
            official = json.load(f)["cases"]["grid8_all"]["masks"]
        # The numbers and their order against the official are AutomaticMaskGenerator.* (C++),
        # with their derived bounds; here the records' form: field names, types, points, crops.
        self.assertEqual(len(coco), len(official))
        for ours, theirs in zip(coco, official):
            self.assertEqual(sorted(ours), sorted(theirs))
            self.assertIsInstance(ours["area"], int)
        key = lambda r: (r["point_coords"], r["crop_box"])
        self.assertEqual(sorted(map(key, coco)), sorted(map(key, official)))

        binary = ptq4sam.SamAutomaticMaskGenerator(model, **SETTINGS).generate(image)  # output_mode="binary_mask"
        self.assertEqual(binary[0]["segmentation"].shape, image.shape[:2])
        self.assertEqual(binary[0]["segmentation"].dtype, np.bool_)
        self.assertEqual(int(binary[0]["segmentation"].sum()), coco[0]["area"])
        raw = ptq4sam.SamAutomaticMaskGenerator(model, output_mode="uncompressed_rle", **SETTINGS).generate(image)
        self.assertEqual(sum(raw[0]["segmentation"]["counts"][1::2]), coco[0]["area"])  # the official area_from_rle

    def test_bad_arguments_raise(self):
        require_fixture(self)
        model = ptq4sam.load_model(os.path.join(SAM_TINY, "checkpoint.pth"))
        with self.assertRaises(ValueError) as caught:
            ptq4sam.SamAutomaticMaskGenerator(model, points_per_side=0)
        self.assertIn("points-per-side", str(caught.exception))
        with self.assertRaises(ValueError):
            ptq4sam.SamAutomaticMaskGenerator(model, output_mode="png")
        with self.assertRaises(ValueError):
            ptq4sam.SamAutomaticMaskGenerator(model, point_grids=[np.zeros((4, 2))])
        with self.assertRaises(ValueError):
            ptq4sam.SamAutomaticMaskGenerator(model).generate(np.zeros((10, 10), np.uint8))


if __name__ == "__main__":
    unittest.main()
