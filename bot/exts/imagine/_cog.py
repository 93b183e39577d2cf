"""/imagine and the job buttons. Each handler: check, parse (pure helpers), call a service, reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.exts.common.actor import actor_of
from bot.exts.common.formatting import info_message
from bot.exts.common.params import Batch, Cfg, ClipSkip, Hires, HiresSteps, Negative, Prompt, Seed, Steps, Strength
from bot.exts.imagine import _inputs, _replay
from bot.exts.imagine._autocomplete import AUTOCOMPLETE, CONTROL_AUTOCOMPLETE, RESIZE_MODES
from bot.exts.imagine._delivery import DiscordJobListener
from bot.exts.imagine._images import ImageActions, errors_replace_thinking
from bot.exts.imagine._views import EditModal, SavePresetModal
from bot.option_spec import GenerationRequest, describe, inline_text, lora_tag
from bot.options import append_to_prompt, from_slash, parse_inline
from bot.services.records import JobRecord
from bot.services.resolution import merge_units
from bot.services.submission import Command, Requester

log = logging.getLogger(__name__)


def options_text(options: dict[str, Any], seed: int | None = None) -> str:
    """A job's options in the inline syntax, to prefill the edit modal (parsed back by `parse_inline`): what it
    was made with, leaving out the settings that were off (no checkpoint named, no Hires. fix, no strength, no
    inpaint controls without a mask); the prompts have fields of their own."""
    shown = {**options, "seed": seed if seed is not None else options["seed"], "negative_prompt": None}
    if not shown.get("model"):
        shown["model"] = None
    if (shown.get("hires") or 0) <= 1:
        shown.update(hires=None, hires_steps=None, hires_upscaler=None)
    if not shown.get("mask") and not shown.get("outpaint"):
        shown.update(mask_blur=None, mask_mode=None, masked_content=None, inpaint_area=None, padding=None)
    return inline_text(shown)


class Imagine(ImageActions, commands.Cog):
    def __init__(self, bot) -> None:
        self.bot = bot
        # Message context menus ("Apps > Remix", "Apps > Use as control"); they cannot be declared inside a cog class.
        self._menus = [
            app_commands.ContextMenu(name="Remix", callback=self.remix),
            app_commands.ContextMenu(name="Use as control", callback=self.use_as_control),
        ]

    async def cog_load(self) -> None:
        for menu in self._menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self._menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    @property
    def services(self):
        return self.bot.services

    # --- /imagine --------------------------------------------------------------------------------------
    @app_commands.command(name="imagine", description="Draw an image from a prompt (A1111 syntax, --options)")
    @app_commands.describe(
        **describe(
            "negative",
            "preset",
            "steps",
            "cfg",
            "sampler",
            "seed",
            "size",
            "clip_skip",
            "vae",
            "model",
            "batch",
            "lora",
            "strength",
            "resize_mode",
            "hires",
            "hires_steps",
            "hires_upscaler",
            prompt="What to draw; may end with options like --ar 2:3 --seed 5 --no text --steps 30 --<preset>",
            image="Start from this image (img2img): PNG, JPEG or WebP; with --cn, the ControlNet image instead",
            mask="Inpaint: change only the white part of the image (PNG, JPEG or WebP; needs image)",
            control_image="ControlNet: steer the image with this one (a pose, lines, a depth map…)",
            control_model="ControlNet model (default: one named after the preprocessor)",
            control_module="ControlNet preprocessor: canny, none (the image is the map already), invert…",
            control_weight="ControlNet weight, 0-2 (1)",
        )
    )
    @app_commands.autocomplete(**AUTOCOMPLETE, **CONTROL_AUTOCOMPLETE)
    @app_commands.choices(resize_mode=RESIZE_MODES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        negative: Negative | None = None,
        preset: str | None = None,
        steps: Steps | None = None,
        cfg: Cfg | None = None,
        sampler: str | None = None,
        seed: Seed | None = None,
        size: str | None = None,
        clip_skip: ClipSkip | None = None,
        vae: str | None = None,
        model: str | None = None,
        batch: Batch | None = None,
        lora: app_commands.Range[str, 1, 200] | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        strength: Strength | None = None,
        resize_mode: str | None = None,
        hires: Hires | None = None,
        hires_steps: HiresSteps | None = None,
        hires_upscaler: str | None = None,
        control_image: discord.Attachment | None = None,
        control_model: str | None = None,
        control_module: str | None = None,
        control_weight: app_commands.Range[float, 0.0, 2.0] | None = None,
    ) -> None:
        typed = from_slash(
            negative=negative,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            seed=seed,
            size=size,
            clip_skip=clip_skip,
            vae=vae,
            model=model,
            batch=batch,
            strength=strength,
            resize_mode=resize_mode,
            hires=hires,
            hires_steps=hires_steps,
            hires_upscaler=hires_upscaler,
        )
        if lora:
            prompt = append_to_prompt(prompt, lora_tag(lora.strip()))
        unit = {"model": control_model, "module": control_module, "weight": control_weight}
        if any(v is not None for v in unit.values()):
            typed["controls"] = [{k: v for k, v in unit.items() if v is not None}]
        presets = [preset] if preset else []
        await self.run_prompt(interaction, prompt, typed, presets, image=image, mask=mask, control=control_image)

    async def run_prompt(
        self,
        interaction: discord.Interaction,
        text: str,
        typed: dict[str, Any],
        typed_presets: list[str],
        *,
        image: discord.Attachment | None = None,
        start: _inputs.StartImage | None = None,
        mask: discord.Attachment | None = None,
        control: discord.Attachment | None = None,
        axes: list[str | None] | None = None,
    ) -> None:
        """Shared by /imagine, /xyz (`axes`: its X, Y and Z), Remix, Use as control and the edit modal: inline
        options, presets, typed options (which win; a ControlNet unit's typed settings over its `--cn` ones).

        The start image is an attachment (`image`, downloaded after the acknowledgement) or one already kept
        (`start`: Edit of an img2img result keeps its start image); an inpainting `mask` and the ControlNet image
        (`control`) are attachments too. With `--cn` or control settings and no control image, the attached `image`
        is the control image instead of a start image. Pure checks answer at once (ephemeral); then the
        interaction is deferred before any database or engine work, so it is acknowledged within milliseconds
        however busy the bot is.
        """
        inline = parse_inline(text)
        merged = {**inline.options, **{k: v for k, v in typed.items() if v is not None}}
        controls = merge_units(inline.options.get("controls", []), typed.get("controls") or [])
        if control is None and image is not None and mask is None and controls and not controls[0].get("image"):
            control, image = image, None  # `--cn canny` with an attached image: the image steers
        if control is not None and not controls:
            controls = [{}]
        merged.pop("controls", None)
        if controls:
            merged["controls"] = controls
        if inline.prompt:
            merged["prompt"] = inline.prompt
        limits = self.bot.config.engine_config().limits
        for attachment in (image, control):
            if attachment is not None:
                _inputs.check_declared_size(attachment, limits)  # before any download, answered at once
        if mask is not None:
            if image is None and start is None:
                raise UserError("a mask needs the image to change: attach it as `image` (white in the mask = change)")
            _inputs.check_declared_size(mask, limits, "a mask")
        sized_by_image = "width" not in merged and "aspect_ratio" not in merged
        if start is not None:  # in the journal's payload too, so a replay starts from it
            merged = _inputs.with_start_image(merged, start, limits)
        presets = [*inline.presets, *typed_presets]
        payload: dict[str, Any] = {"typed": merged, "presets": presets}
        if axes is not None:
            payload["xyz"] = axes
        if image is not None:  # downloaded after the acknowledgement: a replay downloads it again
            payload.update(image=image.filename, image_url=image.url)
        if mask is not None:
            payload.update(mask=mask.filename, mask_url=mask.url)
        if control is not None:
            payload.update(control=control.filename, control_url=control.url)
        async with self._acknowledged(interaction, payload):
            if image is not None:
                start = await _inputs.save_attachment(image, self._inputs_dir, limits)
                merged = _inputs.with_start_image(merged, start, limits)
            sources = {} if start is None else {"init_image": start.label}
            if mask is not None:
                kept = await _inputs.save_mask_attachment(mask, self._inputs_dir, limits)
                merged["mask"], sources["mask"] = str(kept.path), kept.label
            if control is not None:
                steering = await _inputs.save_attachment(control, self._inputs_dir, limits)
                merged = _inputs.with_control_image(merged, steering, limits, sized=start is None)
                sources["controls"] = steering.label
            sized = sized_by_image and (start is not None or control is not None)
            command = Command(self._requester(interaction), merged, presets, sources=sources, start_sized=sized)
            if axes is not None:
                await self.bot.get_cog("Xyz").submit(interaction, command, axes)
            else:
                await self._submit(interaction, command)

    @property
    def _inputs_dir(self):
        return _inputs.inputs_dir(self.bot.config)

    @contextlib.asynccontextmanager
    async def _acknowledged(self, interaction: discord.Interaction, payload: dict[str, Any]):
        """Journal the command, defer ("thinking…"), then run the body that gives it a job or an answer.

        The journal entry is committed before Discord hears the acknowledgement and settled once the body ends,
        so a process killed in between leaves it for `_replay` at the next start: acknowledged means durable.
        """
        journal = self.services.journal
        if journal is not None:
            journal.append(_replay.ack_of(interaction, payload))
        try:
            await interaction.response.defer(thinking=True)
            async with errors_replace_thinking(interaction):
                yield
        except asyncio.CancelledError:
            raise  # stopped mid-way: the entry stays for the next start
        except BaseException:
            if journal is not None:
                journal.settle(interaction.id)
            raise
        if journal is not None:
            journal.settle(interaction.id)

    async def recover(self) -> int:
        """At start (after the job service's recovery): commands a killed process acknowledged but never saved."""
        return await _replay.replay(self.bot, self._submit, self.bot.get_cog("Xyz").submit)

    @staticmethod
    def _requester(interaction: discord.Interaction) -> Requester:
        """Who asked where, with what Discord says of the channel (age-restricted: the review's NSFW thresholds)."""
        is_nsfw = getattr(interaction.channel, "is_nsfw", None)  # a thread answers for its parent
        age_restricted = bool(is_nsfw()) if callable(is_nsfw) else False
        return Requester(
            interaction.user.id, interaction.guild_id, interaction.channel_id, interaction.id, age_restricted
        )

    async def _submit(self, interaction: Any, command: Command, resumed: bool = False, age_s: float = 0.0) -> JobRecord:
        """The one service call: the pipeline screens, caps and queues it (or holds it for review)."""
        who = command.who
        channel_id = who.channel_id
        if channel_id is None:  # Discord sends a channel with every command; a replayed one kept it
            raise UserError("this command came from no channel, so there is nowhere to post its images")

        def listen() -> DiscordJobListener:
            return DiscordJobListener(
                self.bot,
                user_id=who.user_id,
                channel_id=channel_id,
                guild_id=who.guild_id,
                interaction=interaction,
                resumed=resumed,
                age_s=age_s,
            )

        return await self.services.submissions.submit(command, listen)

    # --- buttons ---------------------------------------------------------------------------------------
    async def on_job_button(self, interaction: discord.Interaction, job_id: int, action: str) -> None:
        job = await self.services.jobs.get(job_id)
        if action == "reroll":
            request = self._request_of(job).replace(seed=-1)
            sources = {**(job.sources or {}), "seed": "re-roll"}
            async with self._acknowledged(interaction, {"request": request.options(), "sources": sources}):
                await self._submit(interaction, Command(self._requester(interaction), request=request, sources=sources))
        elif action == "edit":
            options = dict(job.request)
            await interaction.response.send_modal(
                EditModal(
                    job.id,
                    options.get("prompt", ""),
                    options.get("negative_prompt", ""),
                    options_text(options, job.seed),
                    lambda i, p, n, o: self._on_edit(i, job, p, n, o),
                )
            )
        elif action == "save":
            await interaction.response.send_modal(SavePresetModal(job.id, lambda i, name: self._on_save(i, job, name)))
        elif action == "info":
            await interaction.response.send_message(**self._info_message(job), ephemeral=True)
        elif action == "delete":
            await self.services.moderation.authorize(actor_of(interaction), "delete", job=job)  # owner or moderator
            await interaction.response.defer(ephemeral=True, thinking=True)
            await self.services.jobs.delete_files(job)
            if interaction.message is not None:
                await interaction.message.delete()
            await interaction.followup.send(f"🗑️ deleted job #{job.id}'s images", ephemeral=True)

    def _request_of(self, job: JobRecord):
        return GenerationRequest(**job.request, limits=self.bot.config.engine_config().limits)

    async def _on_edit(
        self, interaction: discord.Interaction, job: JobRecord, prompt: str, negative: str, options: str
    ) -> None:
        """The edited command runs again; an img2img job's edit starts from the same image (its strength and
        resize mode are in the options text), an inpaint job's with the same mask or outpaint margins."""
        start = None
        typed: dict[str, Any] = {"negative_prompt": negative, "controls": job.request.get("controls") or None}
        if job.request.get("init_image"):
            label = (job.sources or {}).get("init_image") or f"the start image of job #{job.id}"
            start = await asyncio.to_thread(_inputs.kept_start_image, job.request["init_image"], label)
            typed |= {k: job.request[k] for k in ("mask", "outpaint") if job.request.get(k)}
        await self.run_prompt(interaction, f"{prompt} {options}", typed, [], start=start)

    async def _on_save(self, interaction: discord.Interaction, job: JobRecord, name: str) -> None:
        result = await self.services.presets.save_from_job(interaction.user.id, name, job.request)
        verb = "created" if result.created else "updated"
        await interaction.response.send_message(
            f"💾 preset **{result.preset.name}** {verb}: use it with `--{result.preset.name}` or "
            f"`/imagine preset:{result.preset.name}`",
            ephemeral=True,
        )

    def _info_message(self, job: JobRecord) -> dict[str, Any]:
        return info_message(job.id, job.request, job.sources, job.seed, self.services.jobs.infotext_of(job))
