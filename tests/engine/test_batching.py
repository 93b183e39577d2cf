"""Which waiting jobs share the head job's call (engine/backends/batching.py); the renders themselves are in
test_worker."""

from __future__ import annotations

from engine.backends.batching import chunk_counter, fill, same_call
from engine.request import GenerationRequest


class Job:
    def __init__(self, name: str, seq: int, **settings) -> None:
        self.id, self.seq, self.chunks = name, seq, {}
        self.request = GenerationRequest(name, **{"steps": 4, "width": 64, "height": 64, **settings})


def test_only_jobs_with_the_same_settings_that_fit_share_the_call():
    head = Job("head", 0)
    queue = [
        Job("same", 1),
        Job("bigger", 2, width=128),
        Job("two", 3, batch_size=2),
        Job("cfg", 4, cfg_scale=3),
        Job("also", 5),
    ]
    assert [j.id for j in same_call(head, queue, budget=3)] == ["same", "two", "also"]
    assert [j.id for j in same_call(head, queue, budget=1)] == ["same", "also"]


def test_inpaint_jobs_share_a_call_only_with_the_same_start_image_mask_and_controls():
    inpaint = {"init_image": "a.png", "mask": "m.png"}
    head = Job("head", 0, **inpaint)
    queue = [
        Job("same", 1, **inpaint),
        Job("other mask", 2, init_image="a.png", mask="n.png"),
        Job("blur", 3, **inpaint, mask_blur=8),
        Job("only masked", 4, **inpaint, inpaint_area="masked"),
        Job("img2img", 5, init_image="a.png"),
        Job("outpaint", 6, init_image="a.png", outpaint="0,0,64,0"),
        Job("also", 7, **inpaint),
    ]
    assert [j.id for j in same_call(head, queue, budget=4)] == ["same", "also"]


def test_fill_takes_jobs_in_queue_order_until_the_images_run_out():
    queue = [Job("a", 1), Job("b", 2, batch_size=2), Job("c", 3), Job("d", 4)]
    assert [j.id for j in fill(queue, {"a", "b", "c", "d"}, budget=3)] == ["a", "b"]
    assert [j.id for j in fill(queue, {"b", "c", "d"}, budget=3)] == ["b", "c"]
    assert [j.id for j in fill(queue, {"c"}, budget=3)] == ["c"]


class Encoder:
    def __init__(self) -> None:
        self.calls = 0

    def chunk_count(self, text: str) -> int:
        self.calls += 1
        if "broken" in text:
            raise ValueError("does not tokenize")
        return 1 + len(text) // 100


def test_chunks_are_counted_once_per_checkpoint_and_a_broken_prompt_batches_with_nothing():
    encoder = Encoder()
    count = chunk_counter(encoder, "model-a")
    short, long, broken = Job("a cat", 1), Job("a cat " * 40, 2), Job("broken", 3)
    assert (count(short), count(long)) == (1, 3)
    calls = encoder.calls
    assert count(short) == 1 and encoder.calls == calls  # kept on the job
    assert count(broken) == -1 - broken.seq != count(Job("broken", 4))
    assert chunk_counter(encoder, "model-b")(short) == 1 and set(short.chunks) == {"model-a", "model-b"}
