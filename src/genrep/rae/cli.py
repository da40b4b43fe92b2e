"""``genrep rae ...``: stage-1 commands (cache-latents, train-decoder, reconstruct)."""

from __future__ import annotations

from pathlib import Path

import click

from genrep.core.cli_options import CONFIG, OUT, SET
from genrep.core.cli_options import given_flags as _flags


@click.group()
def rae() -> None:
    """RAE + DiT^DH: diffusion in a frozen representation encoder's latent."""


@rae.command("cache-latents")
@click.option(
    "--encoder", default="effnet-lite0", show_default=True, help="effnet-lite0 | dinov2-reg-s|b|l | siglip2-b | mae-b"
)
@click.option("--source", default=None, help="Hub id or local directory of the encoder weights (HF encoders).")
@click.option("--encoder-size", "input_size", type=int, default=None, help="Encoder input resolution.")
@click.option("--layer", default=None, help="effnet-lite0 only: block16 (320 ch, default) or head (1280 ch).")
@click.option("--dataset", default="fashion-mnist", show_default=True, help="fashion-mnist or an image-folder path.")
@click.option("--split", default="train", show_default=True)
@click.option("--image-size", type=int, default=28, show_default=True, help="Resolution of the target images.")
@click.option("--limit", type=int, default=None, help="Encode only the first N images.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--shard-size", type=int, default=10000, show_default=True)
@click.option("--device", default="auto", show_default=True)
@OUT
def cache_latents_cmd(
    encoder, source, input_size, layer, dataset, split, image_size, limit, batch_size, shard_size, device, out
):
    """Encode a data set once with the frozen encoder (resumable: finished shards are kept)."""
    import time

    from genrep.core.distributed import init_distributed
    from genrep.core.errors import UserError
    from genrep.core.rundir import RunDir
    from genrep.core.runtime import pick_device
    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents

    for name, value in (
        ("limit", limit),
        ("batch-size", batch_size),
        ("shard-size", shard_size),
        ("image-size", image_size),
    ):
        if value is not None and value <= 0:
            raise UserError(f"cache-latents: --{name} must be positive, got {value}")
    info = init_distributed()
    options = _flags(layer=layer)
    enc = build_encoder(encoder, source=source, input_size=input_size, **options)
    run = RunDir(out)
    if info.is_main:
        run.write_config(
            {
                "encoder": enc.spec(),
                "dataset": dataset,
                "split": split,
                "image_size": image_size,
                "limit": limit,
                "batch_size": batch_size,
                "shard_size": shard_size,
                "device": device,
            }
        )
    start = time.perf_counter()
    meta = cache_latents(
        enc,
        dataset,
        out,
        split=split,
        image_size=image_size,
        limit=limit,
        batch_size=batch_size,
        shard_size=shard_size,
        device=pick_device(device),
    )
    seconds = time.perf_counter() - start
    if info.is_main:
        run.write_metrics(
            {
                "num_items": meta["num_items"],
                "num_skipped": meta["num_skipped"],
                "latent_shape": meta["latent_shape"],
                "seconds": round(seconds, 2),
                "images_per_s": meta["num_items"] / max(seconds, 1e-9),
            }
        )
        click.echo(
            f"cached {meta['num_items']} latents of shape {tuple(meta['latent_shape'])} "
            f"({meta['num_skipped']} unreadable images skipped) in {out}"
        )


@rae.command("train-decoder")
@click.option("--latents", type=click.Path(path_type=Path), default=None, help="Latent cache directory.")
@click.option("--decoder", default=None, help="tiny | S | B | L | XL (default tiny).")
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--noise-tau", type=float, default=None, help="Noise augmentation tau (default 0.8; 0 = off).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@CONFIG
@SET
@OUT
def train_decoder_cmd(latents, decoder, max_steps, batch_size, noise_tau, resume, config_path, overrides, out):
    """Train the ViT decoder on cached latents (noise-augmented, EMA, checkpoints)."""
    from genrep.core.config import load_config
    from genrep.core.resume import summary
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    flags = _flags(
        latents=str(latents) if latents else None,
        decoder=decoder,
        max_steps=max_steps,
        batch_size=batch_size,
        noise_tau=noise_tau,
    )
    cfg = load_config(TrainDecoderConfig, config_path, overrides, flags=flags)
    m = train_decoder(cfg, out, resume=resume)
    click.echo(f"trained {cfg.decoder} decoder for {m['steps']} steps; {summary(m)}; model in {Path(out) / 'model'}")


@rae.command("reconstruct")
@click.option(
    "--model", type=click.Path(path_type=Path), default=None, help="RAE directory (or a train-decoder --out)."
)
@click.option("--dataset", default=None, help="fashion-mnist (default) or an image-folder path.")
@click.option("--split", default=None)
@click.option("--limit", type=int, default=None)
@click.option("--latent-noise", type=float, default=None, help="Fixed sigma of noise added to the latent.")
@CONFIG
@SET
@OUT
def reconstruct_cmd(model, dataset, split, limit, latent_noise, config_path, overrides, out):
    """Reconstruct held-out images: PSNR, SSIM, rfd_effnet (and rFID when available), a grid."""
    from genrep.core.config import load_config
    from genrep.rae.reconstruct import ReconstructConfig, reconstruct

    flags = _flags(
        model=str(model) if model else None, dataset=dataset, split=split, limit=limit, latent_noise=latent_noise
    )
    cfg = load_config(ReconstructConfig, config_path, overrides, flags=flags)
    m = reconstruct(cfg, out)
    click.echo(
        f"psnr {m['psnr']:.2f} dB  ssim {m['ssim']:.4f}  rfd_effnet {m['rfd_effnet']:.3f}  "
        f"rfid {m['rfid'] if m['rfid'] is not None else 'unavailable'}  ({m['num_images']} images)"
    )


@rae.command("train-dit")
@click.option(
    "--rae", "rae_dir", type=click.Path(path_type=Path), default=None, help="Trained RAE (or train-decoder --out)."
)
@click.option("--latents", type=click.Path(path_type=Path), default=None, help="Latent cache (default: the RAE's).")
@click.option("--model", default=None, help="dit-tiny|S|B|L|XL or ditdh-tiny|S|XL (default ditdh-tiny).")
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@CONFIG
@SET
@OUT
def train_dit_cmd(rae_dir, latents, model, max_steps, batch_size, resume, config_path, overrides, out):
    """Train a DiT / DiT^DH with flow matching in the RAE latent (schedule shift, EMA, checkpoints)."""
    from genrep.core.config import load_config
    from genrep.core.resume import summary
    from genrep.rae.train_dit import TrainDiTConfig, train_dit

    flags = _flags(
        rae=str(rae_dir) if rae_dir else None,
        latents=str(latents) if latents else None,
        model=model,
        max_steps=max_steps,
        batch_size=batch_size,
    )
    cfg = load_config(TrainDiTConfig, config_path, overrides, flags=flags)
    m = train_dit(cfg, out, resume=resume)
    click.echo(
        f"trained {cfg.model} for {m['steps']} steps (shift alpha {m['shift_alpha']:.3f}); "
        f"{summary(m)}; model in {Path(out) / 'model'}"
    )


@rae.command("sample")
@click.option("--dit", type=click.Path(path_type=Path), default=None, help="Trained DiT (train-dit --out).")
@click.option("--num", type=int, default=None, help="Number of images (class-balanced).")
@click.option("--steps", type=int, default=None, help="ODE steps (default 50).")
@click.option("--sampler", type=click.Choice(["euler", "heun"]), default=None)
@click.option("--guidance", type=click.Choice(["none", "cfg", "autoguidance"]), default=None)
@click.option("--scale", type=float, default=None, help="Guidance scale.")
@CONFIG
@SET
@OUT
def sample_cmd(dit, num, steps, sampler, guidance, scale, config_path, overrides, out):
    """Generate images: a PNG grid (one row per class) and samples.npz (ADM layout)."""
    from genrep.core.config import load_config
    from genrep.rae.sample import SampleConfig, sample

    flags = _flags(dit=str(dit) if dit else None, num=num, steps=steps, sampler=sampler, guidance=guidance, scale=scale)
    cfg = load_config(SampleConfig, config_path, overrides, flags=flags)
    m = sample(cfg, out)
    click.echo(f"generated {m['num']} images ({m['images_per_s']:.1f}/s) in {out}")


@rae.command("eval")
@click.option("--samples", type=click.Path(path_type=Path), default=None, help="A sample --out directory or .npz.")
@click.option("--dataset", default=None, help="Real data: fashion-mnist (default) or an image-folder path.")
@click.option("--split", default=None)
@CONFIG
@SET
@OUT
def eval_cmd(samples, dataset, split, config_path, overrides, out):
    """Score generated images: fd_effnet, precision/recall, class_accuracy (and FID when available)."""
    from genrep.core.config import load_config
    from genrep.rae.evaluate import EvalConfig, evaluate

    flags = _flags(samples=str(samples) if samples else None, dataset=dataset, split=split)
    cfg = load_config(EvalConfig, config_path, overrides, flags=flags)
    m = evaluate(cfg, out)
    acc = m.get("class_accuracy")
    click.echo(
        f"fd_effnet {m['fd_effnet']:.2f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
        f"class_accuracy {acc if acc is None else round(acc, 3)}  fid {m['fid'] if m['fid'] is not None else 'unavailable'}"
    )


@rae.command("convert")
@click.option(
    "--reference",
    "reference",
    type=click.Path(path_type=Path),
    default=None,
    help="A bytetriper/RAE YAML (stage_1 / stage_2 / sampler / guidance / misc).",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the YAML's relative paths start (default: the current directory, as the reference scripts).",
)
@click.option(
    "--diffusers",
    "diffusers_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A diffusers AutoencoderRAE directory -> OUT/rae, a genrep RAE.",
)
@click.option(
    "--to-diffusers",
    "to_diffusers",
    type=click.Path(path_type=Path),
    default=None,
    help="A genrep RAE directory -> OUT/diffusers, an AutoencoderRAE directory.",
)
@click.option(
    "--encoder-source",
    default=None,
    help="With --diffusers / --to-diffusers: hub id or directory of the encoder weights (default: the released one).",
)
@OUT
def convert_cmd(reference, root, diffusers_dir, to_diffusers, encoder_source, out):
    """Convert released or foreign checkpoints to genrep directories (and genrep RAEs to diffusers)."""
    from genrep.core.errors import UserError

    given = [
        name
        for name, v in (("--reference", reference), ("--diffusers", diffusers_dir), ("--to-diffusers", to_diffusers))
        if v is not None
    ]
    if len(given) != 1:
        raise UserError("convert: give exactly one of --reference CONFIG.yaml, --diffusers DIR, --to-diffusers RAE_DIR")
    if root is not None and reference is None:
        raise UserError("convert: --root only applies to --reference")
    if encoder_source is not None and reference is not None:
        raise UserError("convert: --encoder-source only applies to --diffusers and --to-diffusers")
    from genrep.core.rundir import RunDir

    config = {
        "reference": None if reference is None else str(reference),
        "root": None if reference is None else str(root if root is not None else Path.cwd()),
        "diffusers": None if diffusers_dir is None else str(diffusers_dir),
        "to_diffusers": None if to_diffusers is None else str(to_diffusers),
        "encoder_source": encoder_source,
    }
    if reference is not None:
        from genrep.rae.convert import convert_reference

        summary = convert_reference(reference, root if root is not None else Path.cwd(), out)
        shift = f" (shift {summary['shift_alpha']:.4f})" if summary["shift_alpha"] is not None else ""
        click.echo(f"wrote {', '.join(summary['written'])} in {out}{shift}")
        metrics = {"written": list(summary["written"]), "shift_alpha": summary["shift_alpha"]}
    elif diffusers_dir is not None:
        from genrep.rae.diffusers_interop import rae_from_diffusers

        rae = rae_from_diffusers(diffusers_dir, encoder_source=encoder_source)
        rae.save_pretrained(out / "rae")
        note = "" if rae.encoder_spec.get("source") else " (decodes offline; encoding needs --encoder-source)"
        click.echo(f"wrote {out / 'rae'}{note}")
        metrics = {"written": ["rae"], "encoder_source": rae.encoder_spec.get("source")}
    else:
        from genrep.rae.autoencoder import RAE
        from genrep.rae.diffusers_interop import rae_to_diffusers
        from genrep.rae.encoders import build_encoder

        encoder = None
        if encoder_source is not None:
            spec = RAE.from_pretrained(to_diffusers).encoder_spec
            encoder = build_encoder(**{**spec, "source": encoder_source})
        path = rae_to_diffusers(to_diffusers, out / "diffusers", encoder=encoder)
        click.echo(f"wrote {path}")
        metrics = {"written": ["diffusers"], "encoder_weights": encoder is not None}
    run = RunDir(out)  # only after a conversion succeeded: a failed one leaves --out as it was
    run.write_config(config)
    run.write_metrics(metrics, command="rae convert")
