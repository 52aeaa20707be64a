"""The Python module against the ptq4sam binary and the official SamPredictor's interface.

Run by ctest (Python.Module) with PYTHONPATH=build/python and PTQ4SAM_BINARY set; needs numpy
(Debian's python3-numpy) and the fixtures (PTQ4SAM_FIXTURES, default ../shared/fixtures).
"""
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np

import ptq4sam

SOURCE_DIR = os.environ.get("PTQ4SAM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.environ.get("PTQ4SAM_FIXTURES", os.path.join(SOURCE_DIR, "..", "shared", "fixtures"))
SAM_TINY = os.path.join(FIXTURES, "sam_tiny")
BINARY = os.environ.get("PTQ4SAM_BINARY", os.path.join(SOURCE_DIR, "build", "ptq4sam"))


def require_fixture(test):
    if not os.path.exists(os.path.join(SAM_TINY, "checkpoint.pth")):
        test.skipTest("fixture sam_tiny not found under %s (set PTQ4SAM_FIXTURES)" % FIXTURES)


def fmt(values):
    return ",".join(repr(float(v)) for v in values)


class Fixture:
    """One predictor on the fixture photo, shared by the tests (the encoder runs once)."""

    _shared = None

    @classmethod
    def get(cls):
        if cls._shared is None:
            f = cls()
            with open(os.path.join(SAM_TINY, "cases.json")) as file:
                f.cases = json.load(file)
            f.image = ptq4sam.read_image(os.path.join(SAM_TINY, "image.jpg"))
            f.golden = ptq4sam.load_checkpoint(os.path.join(SAM_TINY, "golden.pth"))
            f.predictor = ptq4sam.SamPredictor(os.path.join(SAM_TINY, "checkpoint.pth"), threads=2)
            f.predictor.set_image(f.image)
            cls._shared = f
        return cls._shared

    def mask_input(self, case):
        # cases.json names another case's low-res logits, "point_fg.low_res[0]": the golden's.
        if "mask_input" not in case:
            return None
        name, index = case["mask_input"].split(".low_res[")
        return self.golden[name + ".low_res"][int(index.rstrip("]"))][None, :, :]

    def predict(self, case, **kwargs):
        return self.predictor.predict(
            point_coords=np.array(case["points"]) if "points" in case else None,
            point_labels=np.array(case["labels"]) if "labels" in case else None,
            box=np.array(case["box"]) if "box" in case else None,
            mask_input=self.mask_input(case),
            multimask_output=case["multimask"],
            **kwargs)


class ModuleEqualsBinary(unittest.TestCase):
    """Every case of cases.json: the module's numbers are the binary's, bit for bit."""

    def test_every_case(self):
        require_fixture(self)
        f = Fixture.get()
        for case in f.cases["cases"]:
            with self.subTest(case=case["name"]), tempfile.TemporaryDirectory() as tmp:
                args = [BINARY, "segment", "--model", os.path.join(SAM_TINY, "checkpoint.pth"),
                        "--image", os.path.join(SAM_TINY, "image.jpg"), "--out", tmp, "--threads", "2",
                        "--save-logits", os.path.join(tmp, "logits.npy"),
                        "--save-low-res", os.path.join(tmp, "low_res.npy"),
                        "--save-embedding", os.path.join(tmp, "embedding.npy")]
                for point, label in zip(case.get("points", []), case.get("labels", [])):
                    args += ["--point", fmt(point) + ",%d" % label]
                if "box" in case:
                    args += ["--box", fmt(case["box"])]
                if "mask_input" in case:
                    np.save(os.path.join(tmp, "mask.npy"), f.mask_input(case).astype(np.float32))
                    args += ["--mask-input", os.path.join(tmp, "mask.npy")]
                if case["multimask"]:
                    args.append("--multimask")
                run = subprocess.run(args, capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stderr)

                logits, iou, low_res = f.predict(case, return_logits=True)
                np.testing.assert_array_equal(logits, np.load(os.path.join(tmp, "logits.npy")))
                np.testing.assert_array_equal(low_res, np.load(os.path.join(tmp, "low_res.npy")))
                with open(os.path.join(tmp, "result.json")) as file:
                    result = json.load(file)
                self.assertEqual([float(v) for v in iou], [m["predicted_iou"] for m in result["masks"]])
                np.testing.assert_array_equal(f.predictor.get_image_embedding()[0],
                                              np.load(os.path.join(tmp, "embedding.npy")))
                masks, _, _ = f.predict(case)
                np.testing.assert_array_equal(masks, logits > 0.0)

    def test_matches_the_official_golden(self):
        # The numbers are the binary's (test above), whose agreement with the official golden
        # SamParity.EndToEnd holds with bounds derived from the decoder's float32 spread. This
        # checks the module's own part, the prompts' way in: a point, box or mask input passed
        # wrongly (swapped x/y, unscaled, wrong label) moves the IoU by far more than 1e-2 and
        # flips far more than 1% of the pixels, while the derived bounds are orders smaller.
        require_fixture(self)
        f = Fixture.get()
        for case in f.cases["cases"]:
            with self.subTest(case=case["name"]):
                masks, iou, low_res = f.predict(case)
                name = case["name"]
                np.testing.assert_allclose(iou, f.golden[name + ".iou"], atol=1e-2)
                self.assertEqual(low_res.shape, f.golden[name + ".low_res"].shape)
                self.assertGreaterEqual(np.mean((low_res > 0) == (f.golden[name + ".low_res"] > 0)), 0.99)
                if name + ".masks" in f.golden:
                    self.assertGreaterEqual(np.mean(masks == (f.golden[name + ".masks"] > 0)), 0.99)


# Written as for segment_anything (its predictor_example notebook), with only the import changed.
OFFICIAL_SCRIPT = """
import numpy as np
from ptq4sam import SamPredictor, sam_model_registry

sam = sam_model_registry["vit_b"](checkpoint=checkpoint)
predictor = SamPredictor(sam)
predictor.set_image(image)
h, w = image.shape[:2]

input_point = np.array([[0.5 * w, 0.55 * h]])
input_label = np.array([1])
masks, scores, logits = predictor.predict(point_coords=input_point, point_labels=input_label,
                                          multimask_output=True)
assert masks.shape == (3, h, w) and masks.dtype == bool, (masks.shape, masks.dtype)
assert scores.shape == (3,) and scores.dtype == np.float32
assert logits.shape == (3, 256, 256) and logits.dtype == np.float32

input_point = np.array([[0.5 * w, 0.55 * h], [0.8 * w, 0.2 * h]])
input_label = np.array([1, 1])
mask_input = logits[np.argmax(scores), :, :]
masks, _, _ = predictor.predict(point_coords=input_point, point_labels=input_label,
                                mask_input=mask_input[None, :, :], multimask_output=False)
assert masks.shape == (1, h, w)

input_box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.9 * h])
masks, _, _ = predictor.predict(point_coords=None, point_labels=None, box=input_box[None, :],
                                multimask_output=False)
assert masks.shape == (1, h, w)

input_point = np.array([[0.45 * w, 0.6 * h]])
input_label = np.array([0])
masks, _, _ = predictor.predict(point_coords=input_point, point_labels=input_label, box=input_box,
                                multimask_output=False)
assert masks.shape == (1, h, w)

embedding = predictor.get_image_embedding()
assert embedding.shape == (1, 256, 64, 64) and embedding.dtype == np.float32
assert predictor.original_size == (h, w) and predictor.is_image_set
assert predictor.input_size[0] == 1024 or predictor.input_size[1] == 1024
predictor.reset_image()
assert not predictor.is_image_set
"""


class OfficialInterface(unittest.TestCase):
    def test_official_script_runs_unchanged(self):
        require_fixture(self)
        image = Fixture.get().image
        exec(OFFICIAL_SCRIPT, {"checkpoint": os.path.join(SAM_TINY, "checkpoint.pth"), "image": image})

    def test_bgr_is_rgb_reversed(self):
        require_fixture(self)
        f = Fixture.get()
        other = ptq4sam.SamPredictor(f.predictor.model)
        other.set_image(np.ascontiguousarray(f.image[:, :, ::-1]), image_format="BGR")
        np.testing.assert_array_equal(other.get_image_embedding(), f.predictor.get_image_embedding())

    def test_predict_batch_decodes_each_box_as_predict_does(self):
        require_fixture(self)
        f = Fixture.get()
        h, w = f.image.shape[:2]
        boxes = np.array([[0.1 * w, 0.1 * h, 0.6 * w, 0.8 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.7 * h],
                          [0.0, 0.0, w - 1.0, h - 1.0]])
        masks, iou, low_res = f.predictor.predict_batch(boxes, multimask_output=False)
        self.assertEqual(masks.shape, (3, 1, h, w))
        self.assertEqual(masks.dtype, np.bool_)
        self.assertEqual(iou.shape, (3, 1))
        self.assertEqual(low_res.shape, (3, 1, 256, 256))
        singles = [f.predictor.predict(box=box, multimask_output=False) for box in boxes]
        # Not bit for bit: a batch's products are blocked differently (more rows), and this
        # random decoder amplifies float32 rounding (~1e-4 on the fixture). What the binding
        # must get right is which box lands in which row: each row is the single decode of its
        # own box, far closer to it than to any other box's.
        for i in range(len(boxes)):
            distance = [np.abs(low_res[i] - one_low_res).max() for _, _, one_low_res in singles]
            self.assertEqual(int(np.argmin(distance)), i, distance)
            self.assertLess(distance[i], 0.1 * min(d for j, d in enumerate(distance) if j != i), distance)
            self.assertGreaterEqual(np.mean(masks[i] == singles[i][0]), 0.999)
            np.testing.assert_allclose(iou[i], singles[i][1], atol=1e-3)

    def test_outputs_are_views_of_the_runtime_buffers(self):
        require_fixture(self)
        f = Fixture.get()
        first, second = f.predictor.get_image_embedding(), f.predictor.get_image_embedding()
        self.assertTrue(np.shares_memory(first, second))  # no copy on the way out
        self.assertFalse(first.flags.owndata)
        masks, iou, low_res = f.predictor.predict(box=np.array(f.cases["cases"][0]["box"]))
        self.assertFalse(masks.flags.owndata or low_res.flags.owndata)

    def test_python_runs_while_the_model_does(self):
        # The GIL is released while the decoder and the encoder run: a Python thread keeps counting through the
        # call. Held, it could count only during the interpreter's 5 ms switch interval around
        # the call, far below a twentieth of what it counts in the call's (> 100 ms) duration.
        require_fixture(self)
        f = Fixture.get()
        boxes = np.tile(np.array(f.cases["cases"][0]["box"]), (16, 1))
        encoder = ptq4sam.SamPredictor(f.predictor.model)
        counter = [0]
        stop = threading.Event()

        def count():
            while not stop.is_set():
                counter[0] += 1

        worker = threading.Thread(target=count)
        worker.start()
        try:
            time.sleep(0.05)
            start, before = time.perf_counter(), counter[0]
            time.sleep(0.1)
            rate = (counter[0] - before) / (time.perf_counter() - start)  # sharing the GIL with a sleeper
            runs = []
            for call in (lambda: f.predictor.predict_batch(boxes), lambda: encoder.set_image(f.image)):
                start, before = time.perf_counter(), counter[0]
                call()
                runs.append((counter[0] - before, time.perf_counter() - start))
        finally:
            stop.set()
            worker.join()
        for (during, seconds), what in zip(runs, ("decoder", "encoder")):
            self.assertGreater(seconds, 0.1, what)
            self.assertGreater(during, 0.05 * rate * seconds, "the thread hardly ran while the %s did" % what)

    def test_two_threads_predict_at_once(self):
        # Two Python threads decode concurrently and each gets the numbers it would get alone.
        require_fixture(self)
        f = Fixture.get()
        box = np.array(f.cases["cases"][0]["box"])
        expected = f.predictor.predict(box=box, return_logits=True)[0]
        results = [None, None]

        def work(slot):
            results[slot] = f.predictor.predict(box=box, return_logits=True)[0]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            np.testing.assert_array_equal(r, expected)


class BadArguments(unittest.TestCase):
    """Bad arguments raise (ValueError, or RuntimeError naming the file); none aborts."""

    def setUp(self):
        require_fixture(self)
        self.f = Fixture.get()
        self.p = self.f.predictor
        self.h, self.w = self.f.image.shape[:2]

    def assert_raises(self, kind, text, call, *args, **kwargs):
        with self.assertRaises(kind) as caught:
            call(*args, **kwargs)
        self.assertIn(text, str(caught.exception))

    def test_images(self):
        fresh = ptq4sam.SamPredictor(self.p.model)
        self.assert_raises(ValueError, "uint8", fresh.set_image, self.f.image.astype(np.float32))
        self.assert_raises(ValueError, "H x W x 3", fresh.set_image, self.f.image[:, :, 0])
        self.assert_raises(ValueError, "H x W x 3", fresh.set_image, np.zeros((0, 5, 3), np.uint8))
        self.assert_raises(ValueError, "image_format", fresh.set_image, self.f.image, image_format="HSV")
        self.assert_raises(RuntimeError, "before mask prediction", fresh.predict, box=np.array([1, 1, 5, 5]))
        self.assert_raises(RuntimeError, "to generate an embedding", fresh.get_image_embedding)
        self.assert_raises(RuntimeError, "before mask prediction", fresh.predict_batch, np.array([[1, 1, 5, 5]]))
        self.assertIsNone(fresh.original_size)

    def test_prompts(self):
        p, w, h = self.p, self.w, self.h
        self.assert_raises(ValueError, "point_labels must be supplied", p.predict, point_coords=np.array([[1, 1]]))
        self.assert_raises(ValueError, "N x 2", p.predict, point_coords=np.array([1, 1]), point_labels=np.array([1]))
        self.assert_raises(ValueError, "one label per point", p.predict, point_coords=np.array([[1, 1]]),
                           point_labels=np.array([1, 0]))
        self.assert_raises(ValueError, "must be 1 (foreground) or 0", p.predict, point_coords=np.array([[1, 1]]),
                           point_labels=np.array([2]))
        self.assert_raises(ValueError, "point_coords[0]", p.predict, point_coords=np.array([[w + 10.0, 1]]),
                           point_labels=np.array([1]))
        self.assert_raises(ValueError, "box", p.predict, box=np.array([w + 10.0, 0, w + 20.0, 10]))
        self.assert_raises(ValueError, "x1 < x0", p.predict, box=np.array([50, 50, 10, 60]))
        self.assert_raises(ValueError, "4 numbers", p.predict, box=np.array([1, 2, 3]))
        self.assert_raises(ValueError, "numeric", p.predict, box=["a", "b", "c", "d"])
        self.assert_raises(ValueError, "non-finite", p.predict, box=np.array([np.nan, 0, 10, 10]))
        self.assert_raises(ValueError, "1 x 256 x 256", p.predict, box=np.array([1, 1, 50, 50]),
                           mask_input=np.zeros((1, 64, 64), np.float32))
        self.assert_raises(ValueError, "give point_coords", p.predict)
        self.assert_raises(ValueError, "N x 4", p.predict_batch, np.array([1, 2, 3, 4]))
        self.assert_raises(ValueError, "boxes[1]", p.predict_batch, np.array([[1, 1, 9, 9], [w + 5.0, 0, w + 9.0, 9]]))

    def test_a_box_partly_outside_is_clipped(self):
        inside = self.p.predict(box=np.array([10.0, 20.0, self.w - 1.0, self.h - 1.0]), return_logits=True)[0]
        beyond = self.p.predict(box=np.array([10.0, 20.0, self.w + 300.0, self.h + 300.0]), return_logits=True)[0]
        clipped = self.p.predict(box=np.array([10.0, 20.0, float(self.w), float(self.h)]), return_logits=True)[0]
        np.testing.assert_array_equal(beyond, clipped)
        self.assertEqual(inside.shape, beyond.shape)

    def test_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "missing.pth")
            self.assert_raises(RuntimeError, missing, ptq4sam.SamPredictor, missing)
            truncated = os.path.join(tmp, "truncated.pth")
            with open(os.path.join(SAM_TINY, "checkpoint.pth"), "rb") as src, open(truncated, "wb") as dst:
                dst.write(src.read(4096))
            self.assert_raises(RuntimeError, truncated, ptq4sam.load_model, truncated)
            self.assert_raises(RuntimeError, truncated, ptq4sam.load_checkpoint, truncated)
            corrupt = os.path.join(tmp, "corrupt.jpg")
            with open(corrupt, "wb") as out:
                out.write(b"\xff\xd8\xff\xe0 not really a jpeg")
            self.assert_raises(RuntimeError, corrupt, ptq4sam.read_image, corrupt)
        self.assert_raises(ValueError, "model must be a path", ptq4sam.SamPredictor, 42)
        self.assert_raises(ValueError, "backend", ptq4sam.load_model, "x.pth", backend="gpu")


if __name__ == "__main__":
    unittest.main()
