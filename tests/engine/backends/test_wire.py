"""Events across a process boundary (engine/backends/wire.py): what the engine child and the Ray replicas send the
bot."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.backends.wire import decode_result, encode_event
from engine.jobs import Finished, Queued, Step
from engine.render.pipeline import RenderedImage, RenderResult
from engine.request import GenerationRequest


def test_results_cross_the_wire_as_their_png_bytes():
    """A finished job travels as PNG bytes and arrives with the same pixels, PNG, seeds and request."""
    rng = np.random.default_rng(0)
    images = [
        RenderedImage(
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
            7 + i,
            f"a cat\nSeed: {7 + i}",
            {"nsfw": 0.25 * i},
        )
        for i in range(2)
    ]
    request = GenerationRequest("a cat", seed=7, batch_size=2, width=64, height=64)
    result = RenderResult(request, images, "tiny", None, 1.5, ("a note",))
    kind, data = encode_event(Finished(job_id="1", result=result))
    assert kind == "finished" and all(isinstance(png, bytes) for png, *_ in data["images"])
    back = decode_result(data)
    assert back.request == request and back.seed == 7 and back.notes == ("a note",) and back.model == "tiny"
    for got, want in zip(back.images, images):
        assert got.png() == want.png() and got.seed == want.seed and got.infotext == want.infotext
        assert got.scores == want.scores  # the image classifier's scores travel with their image
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image))
    assert encode_event(Queued(job_id="1", position=2)) is None  # positions are the bot's
    assert encode_event(Step(job_id="1", step=3, total=20)) == ("step", 3, 20, None)


def test_the_start_image_and_mask_a_job_carried_do_not_travel_back():
    request = GenerationRequest(
        "a cat", width=64, height=64, init_image="/in.png", mask="/m.png", init_image_data=b"png", mask_data=b"mask"
    )
    _, data = encode_event(Finished(job_id="1", result=RenderResult(request, [], "tiny", None, 1.0)))
    back = decode_result(data).request
    assert (back.init_image_data, back.mask_data) == (b"", b"") and back == request  # the paths stay
