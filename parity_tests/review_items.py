"""The review table's mapping: each verification item of ../shared/spec/review_plan.md -> its tests and locations.

One :class:`Item` per plan item (stages 1-4 here, 5-9 in :mod:`parity_tests.review_items_late`). An item is found in
the plan by its section ("1.1", "6", "9.4") and the start of its text (``match``); a plan item without an entry, or
whose tests are not found, is reported MISSING by ``python -m parity_tests.review``.

Fields: ``tests`` pytest node ids (a function id covers all its parametrisations); ``jaxkd`` / ``torch`` symbols
``module:qualname`` (optionally ``@text``: the line of the first occurrence of ``text`` in that object's source),
a module-level name (``module:NAME``) or a repository path (``jaxkd/data``, stage 8); any other string is printed
as is (e.g. a torch library function or "—: why there is none"). ``check``: what the tests compare and at which
tolerance. ``measure``: (node-id substring, property-name regex, label) triples that pick the maxima the tests
record with ``record_property``. ``severity``: the impact if the item regressed (Critical / High / Medium / Low).
``deviation``: where the spec and the original code (or jaxkd) differ, what jaxkd does by default and which option
gives the other; ``dev_severity`` rates the deviation itself.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Item:
    section: str
    match: str
    tests: tuple[str, ...]
    jaxkd: tuple[str, ...]
    torch: tuple[str, ...]
    check: str
    measure: tuple[tuple[str, str, str], ...] = ()
    severity: str = "High"
    deviation: str | None = None
    dev_severity: str = "Low"


def item(section, match, tests, jaxkd, torch, check, measure=(), severity="High", deviation=None, dev_severity="Low"):
    return Item(section, match, tuple(tests), tuple(jaxkd), tuple(torch), check, tuple(measure), severity,
                deviation, dev_severity)


# node-id prefixes
CNN, VIT = "parity_tests/test_cnn_parity.py::", "parity_tests/test_vit_parity.py::"
DINO = "parity_tests/test_dinov2_parity.py::"
LOSS, SCHED = "parity_tests/test_losses_parity.py::", "parity_tests/test_schedule_parity.py::"
TRAIN, SPEC = "parity_tests/test_training_parity.py::", "parity_tests/test_spec_defaults.py::"
T_TRAIN, T_FEAT, T_PIPE = "tests/test_train.py::", "tests/test_train_features.py::", "tests/test_pipeline.py::"
T_AUG, T_OPS, T_OPTIM = "tests/test_augment.py::", "tests/test_augment_ops.py::", "tests/test_optim.py::"
T_VIT, T_LOSS, T_DIST = "tests/test_vit.py::", "tests/test_losses.py::", "tests/test_distill.py::"
T_TEACH, T_RES, T_CFG, T_YAML = ("tests/test_teachers.py::", "tests/test_resume.py::", "tests/test_config.py::",
                                 "tests/test_convert_yaml.py::")
T_LAYERS, T_MP = "tests/test_layers.py::", "tests/test_multiprocess.py::"

FWD = "eval/auto|eval/plain|train/auto|train/plain"  # test_forward_eval_and_train_both_attention_paths
REL = (("", "^rel_value$", "value rel. Δ"), ("", "^rel_grad$", "grad rel. Δ"))  # test_losses_parity

SPEC_DEFAULTS = SPEC + "test_base_config_defaults_are_the_spec_defaults"
SHARED_DEFAULTS = SPEC + "test_shared_keyword_defaults_equal_torch_ref"

TINY_DEIT_DEV = (
    "MLP ratio: the original's code default is 4.0 (6,114,740 parameters on CIFAR), its spec table and all its "
    "presets use 2.0 (4,340,660). jaxkd's defaults (base_config vit.mlp_ratio, DeiT(mlp_ratio=)) are the code's "
    "4.0; jaxkd's presets (configs/vit_*.py, deit_*.py) set 2.0 like the original's, and "
    "`--config.vit.mlp_ratio=2.0` gives the spec table's model. LayerNorm eps 1e-5 as the original (DeiT/timm "
    "use 1e-6: `--config.vit.ln_eps=1e-6`).")
TOKENS_256_DEV = (
    "DINOv2 ViT-S/14 at 224 px has 16×16 = 256 patch tokens, not the spec's 196 (14×14 would need patch 16). "
    "jaxkd resizes whatever grid the teacher has to the student's (default teacher_img_size 224: 16×16 → 8×8, "
    "bilinear, which equals a 2×2 mean pool); `--config.ss_distillation.teacher_img_size=196` gives the spec's "
    "196 tokens (14×14 → 8×8).")
BF16_DEV = (
    "Default differs: the original's use_amp defaulted to true (bf16 on), jaxkd's training.use_amp to false "
    "(fp32 unless asked); `--config.training.use_amp=true` (with use_bf16=true, the default) gives the original's "
    "bf16 compute with fp32 parameters and no loss scaling.")

ITEMS_1_4 = [
    # ------------------------------------------------------------------ 1.1 AdaptiveCNN
    item("1.1", "SE Block formula",
         [CNN + "test_eval_logits", CNN + "test_float64_gradients_every_parameter",
          CNN + "test_use_se_false_matches_torch"],
         ["jaxkd.models.cnn:SEBlock.__call__"], ["torch_ref.cnn:SEBlock.forward"],
         "AdaptiveCNN (SE in every block) vs torch_ref with converted weights: fp32 eval logits <= 1e-5 abs at full "
         "size (MNIST 28×28, CIFAR 32×32); float64 gradients of all 61 parameter tensors <= 1e-9 × max|grad|",
         [("test_eval_logits", "eval_max_abs_diff", "eval logits max|Δ|"),
          ("test_float64", "grad_rel_diff", "f64 grads rel. Δ")], "Critical"),
    item("1.1", "Reduction ratio r=16",
         [CNN + "test_param_count_and_keys_match_torch_ref", CNN + "test_torch_ref_state_dict_equals_peer_listing",
          SHARED_DEFAULTS + "[SEBlock]"],
         ["jaxkd.models.cnn:SEBlock.__init__@reduction: int = 16"], ["torch_ref.cnn:SEBlock.__init__"],
         "SE weights C→C/16→C without bias: every state-dict shape equals the original's checkpoint listing "
         "(PEER_CHECKPOINTS.md, e.g. features.11.se.fc.0.weight (32, 512)); reduction=16 default in jaxkd and "
         "torch_ref"),
    item("1.1", "Residual Block formula",
         [CNN + "test_eval_logits", CNN + "test_train_logits_and_running_stats",
          CNN + "test_float64_gradients_every_parameter", CNN + "test_negative_control_same_padding_stride2"],
         ["jaxkd.models.cnn:ResidualBlock.__call__"], ["torch_ref.cnn:ResidualBlock.forward"],
         "conv3x3→BN→ReLU→conv3x3→BN→SE + shortcut (conv1x1+BN on stride/width change), ReLU: train-mode logits "
         "<= 1e-5 and BN running stats (unbiased var, momentum 0.1) <= 1e-6 vs torch_ref",
         [("test_train_logits", "train_logits_max_abs_diff", "train logits max|Δ|"),
          ("test_train_logits", "running_stats_max_abs_diff", "running stats max|Δ|")], "Critical",
         "The spec's one-line formula `ReLU(SE(BN(Conv(BN(Conv(x))))) + Shortcut(x))` has no ReLU after the first "
         "BN; the original code (and torch_ref) has it. jaxkd follows the code (SPEC.md §1), always: no option gives "
         "the spec's formula, which could not reproduce the original's trained checkpoints."),
    item("1.1", "MNIST: 6 blocks",
         [CNN + "test_param_count_and_keys_match_torch_ref[mnist]",
          CNN + "test_torch_ref_state_dict_equals_peer_listing[mnist]",
          CNN + "test_negative_control_block_table_stride_moved",
          T_FEAT + "test_summary_total_params[mnist_cnn-709,034]"],
         ["jaxkd.models.cnn:_BLOCKS"], ["torch_ref.cnn:ARCHITECTURES"],
         "stem 1→32 + max-pool, blocks 32, 32, 32→64 (s2), 64, 64→128 (s2), 128: 709,034 parameters exactly, 106 "
         "state-dict entries equal to the original's listing; torch_ref's layout is SPEC §1's stage description, and "
         "a jaxkd table with a stride dropped (same keys and counts) misses its logits by > 5e-5",
         [("[mnist]", "^params$", "params")]),
    item("1.1", "CIFAR-10: 11 blocks",
         [CNN + "test_param_count_and_keys_match_torch_ref[cifar]",
          CNN + "test_torch_ref_state_dict_equals_peer_listing[cifar]",
          T_FEAT + "test_summary_total_params[cifar_cnn-17,629,514]"],
         ["jaxkd.models.cnn:_BLOCKS@\"cifar\""], ["torch_ref.cnn:ARCHITECTURES@\"cifar\""],
         "stages 64×2, 128×3, 256×3, 512×3 (stride 2 on entry): 17,629,514 parameters exactly, 182 state-dict "
         "entries equal to the original's listing", [("[cifar]", "^params$", "params")]),
    # ------------------------------------------------------------------ 1.2 DeiT / ViT
    item("1.2", "PatchEmbed:",
         [VIT + "test_forward_eval_and_train_both_attention_paths[plain_embed_eps6]",
          VIT + "test_full_depth_preset_keys_counts_and_forward"],
         ["jaxkd.models.vit:PatchEmbed.__call__"], ["torch_ref.vit:PatchEmbed.forward"],
         "Conv(k=P, s=P, bias) + flatten to N=(H/P)(W/P) tokens (CIFAR P=4: 64, MNIST P=2: 196): both heads and "
         "every block's tokens vs torch_ref <= 1e-5 abs fp32 (eval and train, fused and plain attention)",
         [("plain_embed_eps6", FWD, "plain embed max|Δ|")], "Critical"),
    item("1.2", "Hybrid patch embed",
         [VIT + "test_forward_eval_and_train_both_attention_paths[deit_cifar]",
          VIT + "test_forward_eval_and_train_both_attention_paths[deit_mnist]", VIT + "test_gradients_every_parameter"],
         ["jaxkd.models.vit:PatchEmbed.__init__@use_conv_stem"], ["torch_ref.vit:PatchEmbed.__init__"],
         "conv3x3 C→D/2 → BN → GELU → conv3x3 → BN → GELU → projection: outputs <= 1e-5 fp32, BN running stats "
         "<= 1e-6 after a train forward, float64 outputs <= 1e-10 and every gradient <= 1e-9 relative",
         [("[deit_", FWD, "fwd max|Δ|"), ("[deit_", "running_stats", "BN stats max|Δ|"),
          ("test_gradients", "f64_grad_rel", "f64 grads rel. Δ")]),
    item("1.2", "Positional embedding:",
         [VIT + "test_full_depth_preset_keys_counts_and_forward", VIT + "test_inference_modes",
          T_VIT + "test_forward_heads_shapes_and_attributes"],
         ["jaxkd.models.vit:DeiT._features"], ["torch_ref.vit:DeiT._features"],
         "[x_cls; x_dist; patches] + E_pos, E_pos (1, N+2, D) (N+1 without the dist token): the full-depth presets "
         "deit_cifar, vit_cifar, deit_mnist (12 blocks, original key layout) vs torch_ref <= 1e-5 abs",
         [("test_full_depth", "max_abs_diff", "12-block max|Δ|")], "Critical"),
    item("1.2", "Positional interpolation via bicubic",
         [VIT + "test_resized_pos_embed_matches_torch_interpolation",
          VIT + "test_interpolate_pos_embed_matches_torch_ref",
          VIT + "test_resize_matches_torch_interpolate", DINO + "test_pos_embed_interpolation_real_size",
          T_VIT + "test_resize_pos_embed_runs_at_new_resolution"],
         ["jaxkd.models.vit:interpolate_pos_embed", "jaxkd.models.vit:DeiT.resize_pos_embed",
          "jaxkd.models.dinov2:interpolate_pos_encoding"],
         ["torch_ref.vit:interpolate_pos_embed", "torch_ref.dinov2:DinoVisionTransformer.interpolate_pos_encoding"],
         "patch part of E_pos resized bicubically (align_corners=False, A=-0.75), class/dist positions kept: vs "
         "F.interpolate <= 1e-5 fp32 and <= 1e-12 float64; a 32-px DeiT run at 48 px matches torch_ref <= 1e-5",
         [("test_resized_pos", "pos_embed|forward", "8×8→12×12 max|Δ|"), ("bicubic", "^fp32$", "bicubic fp32 max|Δ|"),
          ("bicubic", "^fp64$", "bicubic f64 max|Δ|")], "Medium",
         "The original implemented the interpolation but never called it. jaxkd: DINOv2 teachers interpolate their "
         "positional embedding to the input size (official offsets; 518-px grid → teacher_img_size 224); a DeiT is "
         "resized with DeiT.resize_pos_embed (public API, tested here), but no jaxkd loader calls it: a jaxkd-ViT "
         "teacher is fed images resized to its own training size instead."),
    item("1.2", "MHSA with Flash Attention v2 fallback",
         [VIT + "test_forward_eval_and_train_both_attention_paths", VIT + "test_attention_maps_match_torch",
          T_VIT + "test_attention_paths_agree_forward_and_gradients",
              T_VIT + "test_attention_dropout_forces_plain_path"],
         ["jaxkd.models.attention:Attention.__call__", "jaxkd.models.attention:fused_attention",
          "jaxkd.models.attention:plain_attention"], ["torch_ref.vit:Attention.forward"],
         "vit.attention='auto' (jax.nn.dot_product_attention: XLA picks the kernel, cuDNN flash attention on GPU "
         "where eligible) and 'plain' (explicit softmax) both vs torch_ref <= 1e-5; the paths agree in forward and "
         "gradients; attention dropout falls back to plain. CPU CI runs XLA's fused composite; the cuDNN kernel "
         "needs a GPU and is not exercised here",
         [("", "^eval/auto$|^train/auto$", "fused max|Δ|"), ("", "^eval/plain$|^train/plain$", "plain max|Δ|"),
          ("test_attention_maps", "max_abs_diff", "attention maps max|Δ|")]),
    item("1.2", "DropPath linear scaling",
         [T_VIT + "test_drop_path_schedule", T_VIT + "test_drop_path_semantics"],
         ["jaxkd.models.vit:drop_path_rates", "jaxkd.models.vit:DropPath.__call__"],
         ["torch_ref.vit:DropPath.forward", "torch_ref.vit:DeiT.__init__@drop_path_rate"],
         "rate_i = i/(L-1)·max (12 blocks at 0.1: 0 … 0.1 exactly); per sample x/keep·Bernoulli(keep), rate 0.3 "
         "kept fraction within 4σ; identity in eval", severity="Medium"),
    item("1.2", "DeiT-Tiny defaults",
         [VIT + "test_full_depth_preset_keys_counts_and_forward",
          VIT + "test_forward_eval_and_train_both_attention_paths[mlp4]",
          T_VIT + "test_peer_parameter_counts", T_VIT + "test_variants_table", SPEC_DEFAULTS,
          SHARED_DEFAULTS + "[DeiT]"],
         ["jaxkd.config.schema:base_config@variant=\"tiny\"", "jaxkd.models.vit:DeiT.__init__"],
         ["torch_ref.vit:DeiT.__init__"],
         "D=192, depth 12, 3 heads, drop-path 0.1 in base_config and DeiT(); the original's parameter counts "
         "(4,340,660 / 4,338,346 / 3,923,639 / 6,114,740 with MLP 4.0) exactly",
         [("[mlp4]", FWD, "MLP-4.0 max|Δ|")], deviation=TINY_DEIT_DEV),
    # ------------------------------------------------------------------ 2.1 standard distillation
    item("2.1", "Hard distillation",
         [LOSS + "test_hard_distillation", LOSS + "test_distillation_loss"],
         ["jaxkd.losses.classification:hard_distillation", "jaxkd.losses.classification:distillation_loss"],
         ["torch_ref.losses:hard_distillation", "torch_ref.losses:distillation_loss"],
         "value and gradients vs torch_ref <= 1e-6 relative (float32; normal and ±50 logits; B 1 and 6; full loss "
         "with α, label smoothing and soft labels); control: the teacher's softmax instead of its argmax differs",
         [("test_hard", "^rel_value$|^rel_grad$", "hard max rel. Δ"),
          ("-hard]", "^rel_value$|^rel_grad$", "full loss max rel. Δ")], "Critical"),
    item("2.1", "Soft distillation",
         [LOSS + "test_soft_distillation", LOSS + "test_distillation_loss"],
         ["jaxkd.losses.classification:soft_distillation"], ["torch_ref.losses:soft_distillation"],
         "τ²·KL(p_t‖p_s) with p = softmax(logits/τ), mean over the batch (distillation.kd_normalize='batch'; "
         "'element' = DeiT's code, /(B·K)); τ ∈ {1, 3, 4}: value and gradients <= 1e-6 rel; controls: swapped KL, "
         "missing τ², the other normalisation",
         [("test_soft", "^rel_value$|^rel_grad$", "max rel. Δ")], "Critical"),
    item("2.1", "Temperature default",
         [SPEC_DEFAULTS, SHARED_DEFAULTS + "[soft_distillation]", SHARED_DEFAULTS + "[distillation_loss]"],
         ["jaxkd.config.schema:base_config@tau=", "jaxkd.losses.classification:soft_distillation"],
         ["torch_ref.losses:soft_distillation"],
         "distillation.tau = 3.0 in base_config; tau=3.0 default of soft_distillation / distillation_loss in jaxkd "
         "and torch_ref", severity="Medium"),
    item("2.1", "Alpha scheduling",
         [LOSS + "test_alpha_at", T_LOSS + "test_alpha_schedule_endpoints"],
         ["jaxkd.losses.classification:alpha_at"], ["torch_ref.losses:alpha_at"],
         "constant / linear / cosine after W KD-warm-up epochs (α = 0 before, p = (e−W)/(E−W)): host and jitted "
         "values on 46 epochs vs torch_ref <= 1e-6 rel; control: progress from epoch 0 differs",
         [("", "^rel_value$", "max rel. Δ")]),
    # ------------------------------------------------------------------ 2.2 self-supervised distillation
    item("2.2", "Two-stage training",
         [LOSS + "test_ss_distillation_loss", T_LOSS + "test_ss_distillation_stages_and_zero_token_terms",
          T_DIST + "test_ss_preset_smoke_runs[deit_ss_cifar]"],
         ["jaxkd.losses.ss:ss_distillation_loss", "jaxkd.losses.ss:rel_weight_at",
          "jaxkd.tasks.tokens:SelfSupervisedDistillation.__call__"],
         ["torch_ref.losses:ss_distillation_loss", "torch_ref.losses:rel_weight_at"],
         "stage A (epoch < rel_warmup_epochs 10: CE + λ_tok·L_tok) and B (+ λ_rel·L_rel) at epochs 3 and 12: total "
         "and parts (ce, tok, rel) vs torch_ref <= 1e-6 rel (rel <= 1e-5); control: L_rel in the wrong stage",
         [("", "^rel_value$|^rel_grad$", "max rel. Δ")], "Critical",
         "Token distillation never trains head_dist, yet the original's default `avg` inference averaged its random "
         "logits in. jaxkd resolves vit.inference_mode to 'cls' for token distillation (jaxkd.train.loop.train, "
         "recorded "
         "in config.json); no option restores the averaging (use vit.distillation=false to drop the token)."),
    item("2.2", "Token representation loss",
         [LOSS + "test_token_representation_loss", LOSS + "test_token_representation_teacher_modes",
          T_LOSS + "test_token_loss_with_projectors_and_layers"],
         ["jaxkd.losses.tokens:token_representation_loss"], ["torch_ref.losses:token_representation_loss"],
         "(1/|layers|) Σ (1 − mean cos(P_s(z_s), P_t(z_t))), option mse: value and gradients (tokens and projector "
         "weights) <= 1e-6 rel, teacher projectors trainable / frozen / identity; control: sum instead of mean. "
         "Teacher tokens after its final LN, student tokens before (as the original)", REL, "Critical"),
    item("2.2", "Projection head",
         [LOSS + "test_projection_head", T_LOSS + "test_projection_head_structure_and_init",
          LOSS + "test_token_representation_teacher_modes"],
         ["jaxkd.losses.tokens:ProjectionHead"], ["torch_ref.losses:ProjectionHead"],
         "Linear(in, 512) → LN → GELU (erf) → Linear(512, 256) → LN: value and gradients <= 1e-6 rel; controls: "
         "tanh GELU, LN eps 1e-6. Teacher side trainable by default (as the original, no stop-gradient); "
         "ss_distillation.teacher_projector='frozen' / 'identity' are jaxkd's options against collapse", REL),
    item("2.2", "Token correlation loss",
         [LOSS + "test_token_correlation_loss"],
         ["jaxkd.losses.correlation:token_correlation_loss", "jaxkd.losses.correlation:correlation_matrix"],
         ["torch_ref.losses:token_correlation_loss"],
         "KL(softmax(C_t/τ) ‖ softmax(C_s/τ)) row-wise (= F.kl_div(log softmax(C_s/τ), softmax(C_t/τ))), "
         "C = normalize(z)·normalize(z)ᵀ, τ ∈ {0.1, 1}: value and gradients <= 1e-5 rel fp32 (C/τ amplifies "
         "rounding), the worst case also float64 <= 1e-10; option Frobenius (mse / the original's);"
         " controls: swapped KL, missing τ, raw C",
         [("", "^rel_value$|^rel_grad$", "fp32 max rel. Δ"), ("", "^rel_value64$|^rel_grad64$", "f64 max rel. Δ")],
         "High",
         "Full (per-image N×N) mode only: the original's kl_div(reduction='batchmean') divides the sum over all B·N "
         "rows by B, i.e. N × the row mean; jaxkd's default is the row mean "
         "(ss_distillation.correlation_full_reduction='row_mean'), 'peer_batchmean' gives the original's. The "
         "default pooled mode is the same in both."),
    item("2.2", "Pooled mode",
         [LOSS + "test_token_correlation_loss", LOSS + "test_ss_distillation_loss"],
         ["jaxkd.losses.correlation:correlation_matrix@pooled"], ["torch_ref.losses:correlation_matrix"],
         "z = mean over tokens → B×B sample correlation (default use_pooled_correlation=true): KL and both Frobenius "
         "forms <= 1e-5 rel fp32, float64 <= 1e-10; a batch of one gives 0",
         [("(pooled", "^rel_value$|^rel_grad$", "fp32 max rel. Δ"), ("(pooled", "^rel_value64$", "f64 rel. Δ")],
         "Medium"),
    item("2.2", "Token interpolation",
         [LOSS + "test_resize_tokens", VIT + "test_bilinear_16_to_8_is_2x2_mean_pool",
          T_LOSS + "test_resize_16_to_8_is_2x2_mean_pool_and_identity_on_same_grid"],
         ["jaxkd.losses.tokens:resize_tokens",
          "jaxkd.models.resize:resize_bilinear"], ["torch_ref.losses:resize_tokens"],
         "teacher grid → student grid, bilinear align_corners=False: vs torch_ref (F.interpolate) <= 1e-6 rel for "
         "16×16→8×8, 4×4→7×7, 4×6→3×5; 16→8 equals a 2×2 mean pool; controls: align_corners=True, antialias",
         [("", "^rel_value$", "max rel. Δ"), ("test_bilinear_16", "max_abs_diff", "vs 2×2 mean pool max|Δ|")],
         deviation=TOKENS_256_DEV),
    item("2.2", "Default params",
         [SPEC_DEFAULTS, SHARED_DEFAULTS + "[ss_distillation_loss]", SHARED_DEFAULTS + "[ProjectionHead]",
          SHARED_DEFAULTS + "[token_correlation_loss]"],
         ["jaxkd.config.schema:base_config@ss_distillation = "], ["torch_ref.losses:ss_distillation_loss"],
         "λ_tok 1.0, λ_rel 0.1, projection_dim 256 (hidden 512), token_layers [6, 11], rel_warmup_epochs 10, "
         "correlation τ 0.1, pooled: base_config and the shared keyword defaults of jaxkd and torch_ref",
         severity="Medium"),
]

ITEMS_1_4 += [
    # ------------------------------------------------------------------ 3.1 data parallelism (DDP / NCCL in JAX)
    item("3.1", "NCCL backend initialization",
         [T_MP + "test_two_processes_with_coinciding_saves_match_one_process",
          T_PIPE + "test_two_processes_each_hold_only_their_shard"],
         ["jaxkd.train.loop:maybe_initialize_distributed", "jaxkd.data.pipeline:make_data_mesh"],
         ["—: torch_ref has no DDP (the original: dist.init_process_group('nccl'))"],
         "JAX equivalent: jax.distributed.initialize (JAXKD_COORDINATOR / JAXKD_NUM_PROCESSES / JAXKD_PROCESS_ID, or a "
         "detected cluster with JAXKD_DISTRIBUTED=1) and one data mesh over every process's devices; XLA picks the "
         "collectives (NCCL on GPU, gloo on CPU). Two real processes on localhost train to the one-process "
         "parameters (<= 1e-5) and each feeds only its own rows", severity="Critical"),
    item("3.1", "DistributedSampler for non-overlapping shards",
         [T_PIPE + "test_sharded_over_8_devices_equals_single_device",
          T_PIPE + "test_two_processes_each_hold_only_their_shard"],
         ["jaxkd.data.pipeline:DataPipeline.train_batches", "jaxkd.data.pipeline:process_local_rows"],
         ["—: the original used torch.utils.data.DistributedSampler"],
         "the global batch is sharded on the mesh's 'data' axis: 8 simulated CPU devices hold 8 disjoint shards of "
         "4 rows of a batch of 32, equal to the 1-device batch (augmented pixels <= 1e-5); 2 processes × 4 devices "
         "each hold exactly their half", severity="Critical"),
    item("3.1", "Metric aggregation",
         [T_TRAIN + "test_eight_devices_match_one"],
         ["jaxkd.train.steps:make_train_step", "jaxkd.train.steps:make_eval_step"],
         ["—: the original reduced with dist.all_reduce(loss, SUM)"],
         "JAX equivalent: losses and metrics are means / sums over the global sharded batch inside the jitted step, "
         "XLA inserts the cross-device reduction; 8 simulated devices vs 1: parameters and test loss <= 1e-5"),
    item("3.1", "Effective batch",
         [T_TRAIN + "test_eight_devices_match_one", T_TRAIN + "test_batch_not_divisible_by_devices_is_a_config_error",
          T_YAML + "test_from_yaml_devices_and_string_floats"],
         ["jaxkd.config.schema:base_config@batch_size=", "jaxkd.train.loop:_train@batch_size %"], ["—: no twin"],
         "a batch of 16 on 8 devices (2 per device) trains as on 1 device; a batch not divisible by the devices is a "
         "config error naming the multiple", severity="Medium",
         deviation="The original's data.batch_size was per GPU (effective batch = batch_size × GPUs); jaxkd's "
         "data.batch_size is the GLOBAL batch, split over the devices. To reproduce an N-GPU run set data.batch_size "
         "= per-GPU batch × N, or import its YAML with `python -m jaxkd.convert from-yaml --devices N`, which does.",
         dev_severity="Medium"),
    # ------------------------------------------------------------------ 3.2 mixed precision
    item("3.2", "BF16: no GradScaler",
         [T_FEAT + "test_bf16_run_finishes_with_finite_loss", T_VIT + "test_bf16_compute_close_to_fp32",
          T_LAYERS + "test_batchnorm_bf16_compute_keeps_float32_stats", SPEC_DEFAULTS],
         ["jaxkd.config.schema:precision",
          "jaxkd.train.steps:init_state"], ["—: the original used torch.autocast(bfloat16)"],
         "use_amp + use_bf16: bf16 compute, fp32 parameters, BN statistics and logits, no loss scale in the state or "
         "metrics; first-step loss within 0.05 of fp32", deviation=BF16_DEV),
    item("3.2", "FP16: GradScaler required",
         [T_FEAT + "test_fp16_run_uses_dynamic_loss_scaling",
          T_FEAT + "test_fp16_loss_scale_halves_on_overflow_and_skips_the_step"],
         ["jaxkd.train.steps:make_train_step@loss_scale"], ["—: the original used torch.cuda.amp.GradScaler"],
         "use_amp, use_bf16=false: dynamic loss scaling as GradScaler (initial 2^15, halve and skip the step on "
         "non-finite gradients, grow after a run of good steps)"),
    # ------------------------------------------------------------------ 3.3 label smoothing
    item("3.3", "Formula:",
         [LOSS + "test_cross_entropy_hard"],
         ["jaxkd.losses.classification:cross_entropy"], ["torch_ref.losses:cross_entropy"],
         "ε ∈ {0, 0.1}, normal and ±50 logits: value and gradient vs torch_ref (F.cross_entropy(label_smoothing=ε)) "
         "<= 1e-6 rel; control: the ε/(K−1) convention differs", REL, "Critical"),
    item("3.3", "Soft label handling",
         [LOSS + "test_cross_entropy_soft", T_FEAT + "test_mixup_runs_on_soft_targets"],
         ["jaxkd.losses.classification:cross_entropy@smooth_soft_targets"], ["torch_ref.losses:cross_entropy"],
         "−Σ t·log_softmax(y) for MixUp/CutMix targets, not smoothed (as the original; smooth_soft_targets=True "
         "smooths them): <= 1e-6 rel; the trainer passes soft targets only when mixing", REL),
    # ------------------------------------------------------------------ 3.4 SWA
    item("3.4", "Activates at 75%",
         [SCHED + "test_swa_phase_runs_at_swa_lr_from_three_quarters",
          SCHED + "test_swa_start_rounds_down_and_is_none_without_swa",
          T_FEAT + "test_swa_averages_from_half_way_at_swa_lr"],
         ["jaxkd.train.optim:swa_start", "jaxkd.train.optim:epoch_lr"], ["torch.optim.swa_utils.SWALR (in the test)"],
         "from epoch ⌊0.75·E⌋ (E = 10: 7) at the constant swa_lr, as SWALR(anneal_epochs=0) after the regular "
         "schedule: <= 1e-6 rel per epoch and per step; control: one epoch late differs",
         [("", "swa_phase_rel", "max rel. Δ")], "Medium"),
    item("3.4", "Post-training BatchNorm update",
         [TRAIN + "test_swa_average_and_bn_recompute_match_swa_utils",
          T_FEAT + "test_swa_averages_from_half_way_at_swa_lr"],
         ["jaxkd.train.evaluators:bn_recompute", "jaxkd.train.steps:swa_update"], ["torch_ref.optim:update_bn",
                                                                  "torch_ref.optim:swa_average"],
         "equal-weight average (AveragedModel) and update_bn (momentum=None: equal-weight batch statistics) vs "
         "torch.optim.swa_utils <= 1e-5 abs; control: momentum-0.1 statistics differ",
         [("", "swa_bn_max_abs_diff", "max|Δ|")], "Medium",
         "The original built the averaged model but never evaluated or saved it. jaxkd evaluates it after training "
         "with recomputed BatchNorm statistics (report.json 'swa', summary swa_test_accuracy) and keeps it in every "
         "checkpoint (TrainState.swa_params); training.use_swa=false (default true, as the original) turns SWA off."),
    # ------------------------------------------------------------------ 3.5 clipping
    item("3.5", "clip_grad_norm with max_norm=1.0",
         [T_OPTIM + "test_global_norm_clipping_matches_clip_grad_norm", TRAIN + "test_twenty_steps_match_torch",
          SPEC_DEFAULTS],
         ["jaxkd.train.optim:make_optimizer@clip_by_global_norm", "jaxkd.config.schema:base_config@gradient_clip_val="],
         ["torch_ref.optim:train_steps@clip_grad_norm_"],
         "optax.clip_by_global_norm before the optimiser = torch.nn.utils.clip_grad_norm_ (max_norm 10 and 0.05); "
         "default 1.0; 20 clipped training steps vs torch <= 1e-4",
         [("test_twenty", "param_max_abs_diff", "20-step params max|Δ|")]),
    # ------------------------------------------------------------------ 4 data augmentation
    item("4.1", "Mask rectangular region",
         [T_AUG + "test_train_transform_end_to_end_matches_torchvision", T_AUG + "test_geometric_draws"],
         ["jaxkd.data.augment:make_train_transform@cutout_box", "jaxkd.data.augment_mix:cutout_box"],
         ["torch_ref.augment:cutout"],
         "img·mask, mask[y1:y2, x1:x2] = 0, side 16 (CIFAR) / 8 (MNIST), centre uniform, box clipped, after Normalize "
         "(as the original): the jitted train transform equals torchvision + the original's Cutout bit for bit given "
         "the same draws; box sizes by χ²", severity="Medium"),
    item("4.2", "Linear interpolation",
         [T_AUG + "test_mix_per_sample_exact_vs_peer_formulas", T_AUG + "test_make_mix_batch_mode_and_disabled"],
         ["jaxkd.data.augment_mix:mix_batch"], ["torch_ref.augment:mixup_per_sample", "torch_ref.augment:mix_targets"],
         "x̃ = λx₁ + (1−λ)x₂ and ỹ = λy₁ + (1−λ)y₂ per sample (as the original; mix_mode='batch' option): bit-exact "
         "vs the original's torch formulas given the same partner and λ"),
    item("4.2", "Lambda from Beta",
         [T_AUG + "test_symmetric_beta_distribution", T_AUG + "test_mix_per_sample_exact_vs_peer_formulas"],
         ["jaxkd.data.augment_mix:symmetric_beta"], ["—: numpy.random.beta in the original"],
         "Kolmogorov-Smirnov against Beta(α, α) for α ∈ {0.2, 1, 2} (p > 1e-4); control: the wrong α is rejected",
         severity="Medium"),
    item("4.3", "Patch replacement",
         [T_AUG + "test_mix_per_sample_exact_vs_peer_formulas"],
         ["jaxkd.data.augment_mix:mix_batch@_box_mask"], ["torch_ref.augment:cutmix_per_sample"],
         "x̃[box] = x₂[box] per sample: bit-exact vs the original's formula given the same box"),
    item("4.3", "Area-proportional lambda",
         [T_AUG + "test_cutmix_box_formula_matches_rand_bbox", T_AUG + "test_mix_per_sample_exact_vs_peer_formulas"],
         ["jaxkd.data.augment_mix:cutmix_box"], ["torch_ref.augment:cutmix_lambda"],
         "λ = 1 − area(clipped box)/area, recomputed after clipping: exact on 20,000 random λ and the boundaries"),
    item("4.3", "Bounding box",
         [T_AUG + "test_cutmix_box_formula_matches_rand_bbox"],
         ["jaxkd.data.augment_mix:cutmix_box"], ["torch_ref.augment:rand_bbox"],
         "cut_rat = sqrt(1−λ), cut = int(W·cut_rat), centre uniform, clipped: float32 box equals the original's "
         "float64 rand_bbox on 20,000 random λ and the exact-square boundaries (32 and 28 px)"),
    item("4.4", "AutoAugment CIFAR-10 policy",
         [T_OPS + "test_autoaugment_every_subpolicy_like_torchvision",
          T_OPS + "test_policy_tables_are_torchvisions", T_OPS + "test_inverse_affine_matrix_matches_torchvision",
          T_OPS + "test_every_policy_op_matches_torchvision",
          T_AUG + "test_colour_and_policy_draws"],
         ["jaxkd.data.autoaugment:apply_autoaugment", "jaxkd.data.autoaugment:autoaugment_params"],
         ["torch_ref.augment:autoaugment"],
         "the policy tables are torchvision's own; all 25 CIFAR-10 sub-policies (and the ImageNet and SVHN ones) "
         "applied exactly like torchvision's AutoAugment.forward on uint8 images (a magnitude bin moved in jaxkd's "
         "table is detected), every op and magnitude bin exact, the inverse affine matrix equal to torchvision's "
         "<= 1e-12; sub-policy, probability and sign draws uniform (χ² / KS)", severity="Medium"),
    item("4.4", "RandAugment(num_ops=2, magnitude=9)",
         [T_OPS + "test_randaugment_draws_applied_like_torchvision", T_OPS + "test_every_policy_op_matches_torchvision",
          T_AUG + "test_colour_and_policy_draws", SPEC_DEFAULTS],
         ["jaxkd.data.autoaugment:apply_randaugment", "jaxkd.config.schema:base_config@randaugment="],
         ["torch_ref.augment:randaugment"],
         "num_ops 2, magnitude 9 (31 bins) by default: applied exactly like torchvision's RandAugment given the same "
         "op draws; the 14 ops drawn uniformly", severity="Medium"),
]


def all_items() -> list[Item]:
    """Every mapping entry, stages 1-9."""
    from parity_tests.review_items_late import ITEMS_5_9

    return ITEMS_1_4 + ITEMS_5_9
