"""The review table's mapping, stages 5-9 (see :mod:`parity_tests.review_items` for the fields)."""

from __future__ import annotations

from parity_tests.review_items import (
                                       BF16_DEV,
                                       CNN,
                                       DINO,
                                       LOSS,
                                       REL,
                                       SCHED,
                                       SPEC,
                                       SPEC_DEFAULTS,
                                       T_AUG,
                                       T_CFG,
                                       T_DIST,
                                       T_FEAT,
                                       T_LAYERS,
                                       T_MP,
                                       T_OPTIM,
                                       T_PIPE,
                                       T_RES,
                                       T_TEACH,
                                       T_TRAIN,
                                       T_VIT,
                                       T_YAML,
                                       TOKENS_256_DEV,
                                       TRAIN,
                                       VIT,
                                       Item,
                                       item,
)

NO_EQUIVALENT = "jaxkd.interop.yaml_fields:NO_EQUIVALENT"
CLS_DROP = "parity_tests/test_cls_token_dropout_parity.py::"

ITEMS_5_9: list[Item] = [
    # ------------------------------------------------------------------ 5 optimisation
    item("5.1", "AdamW for MNIST/ViT",
         [T_OPTIM + "test_optimizer_matches_torch[adamw]", TRAIN + "test_twenty_steps_match_torch[adamw-accum1-vit]",
          TRAIN + "test_twenty_steps_match_torch[adamw-accum2-deit]", SPEC + "test_presets_use_the_original_optimisers",
          T_OPTIM + "test_deit_mask_applies_in_the_optimizer"],
         ["jaxkd.train.optim:make_optimizer@adamw"], ["torch_ref.optim:make_optimizer"],
         "scale_by_adam → add_decayed_weights → −lr (decoupled decay) = torch.optim.AdamW <= 1e-12 rel; 20 steps of a "
         "DeiT (clipping, smoothing, cosine warm-up) vs torch <= 1e-4; presets mnist_cnn, vit_*, deit_* use AdamW. "
         "Decay on every parameter as the original (weight_decay_mask='all'); 'deit' excludes biases, norms, tokens",
         [("adamw", "param_max_abs_diff", "20-step params max|Δ|"), ("adamw", "loss_max_abs_diff", "loss max|Δ|")],
         "Critical"),
    item("5.1", "SGD+Nesterov for CIFAR CNN",
         [T_OPTIM + "test_optimizer_matches_torch[sgd]", TRAIN + "test_twenty_steps_match_torch[sgd-accum1-deit]",
          TRAIN + "test_twenty_steps_match_torch[sgd-accum2-vit]", SPEC + "test_presets_use_the_original_optimisers"],
         ["jaxkd.train.optim:make_optimizer@sgd"], ["torch_ref.optim:make_optimizer"],
         "SGD, momentum 0.9, Nesterov, weight decay added to the gradient = torch.optim.SGD <= 1e-12 rel; 20 steps vs "
         "torch <= 1e-4; the cifar_cnn preset uses it (lr 0.8)",
         [("sgd", "param_max_abs_diff", "20-step params max|Δ|"), ("sgd", "loss_max_abs_diff", "loss max|Δ|")],
         "Critical"),
    item("5.1", "Fused optimizers on H100",
         [T_YAML + "test_from_yaml_unsupported_fields", TRAIN + "test_twenty_steps_match_torch"],
         ["jaxkd.train.steps:make_train_step@jax.jit",
          NO_EQUIVALENT], ["—: torch.optim(..., fused=True) in the original"],
         "the optimiser update runs inside the one jitted train step (XLA fuses it on every platform) and matches "
         "torch's unfused update", severity="Low",
         deviation="No such field in jaxkd: the original's training.use_fused_optimizer has no equivalent (the fusion "
         "is XLA's, always on); `jaxkd.convert from-yaml` notes the field in one line saying so and imports the rest "
         "(yaml_fields.NO_EQUIVALENT)."),
    item("5.2", "Cosine annealing",
         [SCHED + "test_per_epoch_schedule_matches_torch", SCHED + "test_per_step_schedule_after_warmup_matches_torch"],
         ["jaxkd.train.optim:epoch_lr", "jaxkd.train.optim:make_schedule"], ["torch_ref.optim:epoch_lr"],
         "vs torch CosineAnnealingLR (and StepLR / ExponentialLR) chained after the warm-up by SequentialLR: epoch_lr "
         "<= 1e-12 rel, the float32 step table <= 1e-6; stepped per epoch as the original (schedule_unit='epoch'; "
         "'step' matches torch stepped per step); control: one epoch off differs",
         [("", "epoch_lr_rel", "epoch_lr rel. Δ"), ("", "table_rel", "step table rel. Δ")], "Critical"),
    item("5.2", "Linear warmup",
         [SCHED + "test_warmup_is_linear_to_eta_max", SCHED + "test_per_step_warmup_matches_linear_lr_per_step",
          SCHED + "test_per_epoch_schedule_matches_torch"],
         ["jaxkd.train.optim:epoch_lr@warmup"], ["torch_ref.optim:epoch_lr"],
         "η_max·(t+1)/W for t < W = LinearLR(1/W, total_iters=W−1): <= 1e-12 rel per epoch, <= 1e-6 per step, "
         "never above η_max", [("", "warmup_rel", "rel. Δ")]),
    item("5.3", "Loss scaling",
         [TRAIN + "test_accumulation_equals_one_step_on_the_concatenated_batch",
          TRAIN + "test_twenty_steps_match_torch[adamw-accum2-deit]",
              TRAIN + "test_twenty_steps_match_torch[sgd-accum2-vit]"],
         ["jaxkd.train.optim:make_optimizer@MultiSteps"], ["torch_ref.optim:train_steps@accumulation"],
         "optax.MultiSteps averages the k micro-batch gradients (= backward of loss/k): accumulation 2 over 4 + 4 "
         "images equals one step on the 8 (<= 1e-6); 20 micro-steps vs torch's loss/k loop <= 1e-4",
         [("test_accumulation", "accum_param_max_abs_diff", "vs concatenated batch max|Δ|"),
          ("accum2", "param_max_abs_diff", "20-step params max|Δ|")]),
    item("5.3", "Step on accumulation boundary",
         [TRAIN + "test_twenty_steps_match_torch[adamw-accum2-deit]",
          TRAIN + "test_twenty_steps_match_torch[sgd-accum2-vit]",
          T_FEAT + "test_gradient_accumulation_steps"],
         ["jaxkd.train.optim:make_optimizer@MultiSteps",
          "jaxkd.train.loop:epoch_steps@steps_per_epoch - steps_per_epoch % accum"],
         ["torch_ref.optim:train_steps@(i + 1) % accumulation"],
         "the optimiser (and the schedule) step on every k-th micro-batch only; an epoch is cut to a whole number of "
         "optimiser steps", [("accum2", "loss_max_abs_diff", "loss max|Δ|")]),
    # ------------------------------------------------------------------ 6 H100 optimisations
    item("6", "BF16 mode without GradScaler",
         [T_FEAT + "test_bf16_run_finishes_with_finite_loss", T_VIT + "test_bf16_compute_close_to_fp32", SPEC_DEFAULTS],
         ["jaxkd.config.schema:precision", "jaxkd.models:compute_dtype"],
         ["—: torch.autocast(bfloat16) in the original"],
         "bf16 compute with fp32 parameters and no loss scale (see 3.2)", deviation=BF16_DEV),
    item("6", "torch.compile with mode selection",
         [T_YAML + "test_from_yaml_unsupported_fields", T_VIT + "test_functional_jit_step_needs_no_rng_arguments"],
         ["jaxkd.train.steps:make_train_step@jax.jit", "jaxkd.train.steps:make_eval_step@jax.jit", NO_EQUIVALENT],
         ["—: torch.compile(mode=...) in the original"],
         "every train and eval step is one jax.jit (XLA) computation; the model's functional step compiles without "
         "RNG arguments", severity="Low",
         deviation="No such fields in jaxkd: compilation is always on and XLA has no modes; the original's "
         "training.use_compile / compile_mode are noted by `jaxkd.convert from-yaml`, one line each saying so, and the "
         "rest imported (yaml_fields.NO_EQUIVALENT)."),
    item("6", "Flash Attention v2 via F.scaled_dot_product_attention",
         [VIT + "test_forward_eval_and_train_both_attention_paths",
          T_VIT + "test_attention_paths_agree_forward_and_gradients"],
         ["jaxkd.models.attention:fused_attention"], ["torch_ref.vit:Attention.forward"],
         "JAX's scaled-dot-product attention, jax.nn.dot_product_attention (vit.attention='auto'; XLA dispatches to "
         "cuDNN flash attention on GPU for bf16/fp16, 'cudnn' forces it): fp32 vs torch_ref <= 1e-5; the cuDNN "
         "kernel needs a GPU and is not exercised on CPU CI",
         [("", "^eval/auto$|^train/auto$", "fused max|Δ|")]),
    item("6", "TF32 matmul enablement",
         [T_FEAT + "test_tf32_sets_the_default_matmul_precision"],
         ["jaxkd.train.loop:_train@use_tf32", "jaxkd.config.schema:base_config@use_tf32="],
         ["—: torch.backends.cuda.matmul.allow_tf32 in the original"],
         "training.use_tf32 sets jax_default_matmul_precision='tensorfloat32', else 'float32' (full fp32 on GPUs "
         "whose XLA "
         "default is TF32; no effect on CPU); default false",
         severity="Low"),
    # ------------------------------------------------------------------ 7 configuration
    item("7", "DataConfig",
         [SPEC_DEFAULTS, T_CFG + "test_preset_loads_and_is_locked", T_YAML + "test_from_yaml_round_trip",
          T_AUG + "test_peer_pipelines_fill_the_section"],
         ["jaxkd.config.schema:base_config@data = _section"], ["—: the original's src/config.py"],
         "data.dataset, batch_size, augmentation.* with the original's names and defaults (SPEC.md §7); the "
         "original's YAMLs import one to one (batch size: see 3.1)", severity="Medium"),
    item("7", "ModelConfig",
         [SPEC_DEFAULTS, T_YAML + "test_from_yaml_round_trip", CNN + "test_use_se_false_matches_torch"],
         ["jaxkd.config.schema:base_config@model = _section"], ["—: the original's src/config.py"],
         "model.model_type (adaptive_cnn | deit), use_se (true; false drops the SE blocks exactly like torch_ref)",
         severity="Medium"),
    item("7", "TrainingConfig",
         [SPEC_DEFAULTS, T_YAML + "test_from_yaml_round_trip", T_YAML + "test_from_yaml_unsupported_fields"],
         ["jaxkd.config.schema:base_config@training = _section", NO_EQUIVALENT], ["—: the original's src/config.py"],
         "optimizer, scheduler, use_amp, use_swa, use_bf16 with the original's names; defaults per SPEC.md §7",
         severity="Medium",
         deviation="use_compile (and compile_mode, use_fused_optimizer) do not exist in jaxkd: XLA always compiles "
         "and fuses (see 5.1, 6); from-yaml notes them. use_amp and use_tf32 default to false in jaxkd (true in the "
         "original; see 3.2); from-yaml imports the original's defaults."),
    item("7", "ViTConfig",
         [SPEC_DEFAULTS, T_CFG + "test_variant_override_brings_its_width", T_VIT + "test_variants_table",
          T_VIT + "test_without_distillation_token_every_mode_is_cls"],
         ["jaxkd.config.schema:base_config@vit = _section"], ["torch_ref.vit:DeiT.__init__"],
         "vit.variant (tiny | small | base, custom) brings its width and heads; vit.distillation adds the dist token "
         "(without it every inference mode is the class head)", severity="Medium"),
    item("7", "DistillationConfig",
         [SPEC_DEFAULTS, T_DIST + "test_teacher_frozen_and_not_in_student_checkpoints",
          T_DIST + "test_missing_teacher_is_a_clear_error", T_YAML + "test_from_yaml_round_trip"],
         ["jaxkd.config.schema:base_config@distillation = _section", "jaxkd.tasks.kd:load_kd_teacher"],
         ["—: the original's src/config.py"],
         "distillation.teacher_checkpoint (a jaxkd workdir, checkpoint or the original's .pth), distillation_type "
         "hard | soft; a soft-KD run from a teacher workdir trains; a missing teacher is one clear error",
         severity="Medium"),
    item("7", "SelfSupervisedDistillationConfig",
         [SPEC_DEFAULTS, T_DIST + "test_ss_preset_smoke_runs[deit_ss_cifar]", T_YAML + "test_from_yaml_round_trip"],
         ["jaxkd.config.schema:base_config@ss_distillation = _section", "jaxkd.tasks.tokens:load_ss_teacher"],
         ["—: the original's src/config.py"],
         "ss_distillation.teacher_type (dinov2 | jaxkd), lambda_tok, lambda_rel and the other §7 fields; the SS "
         "presets train with a tiny DINOv2-architecture teacher", severity="Medium"),
    # ------------------------------------------------------------------ 8 where each component lives in jaxkd
    item("8", "main.py", [T_TRAIN + "test_run_writes_everything"],
         ["jaxkd/train/loop.py", "jaxkd/tasks/__init__.py", "jaxkd/config/__init__.py"], ["—"],
         "the trainer CLI and loop (python -m jaxkd.train), task selection, config loading and CLI overrides",
         severity="Low"),
    item("8", "src/config.py", [T_CFG + "test_json_round_trip", T_YAML + "test_from_yaml_round_trip"],
         ["jaxkd/config/schema.py", "jaxkd/interop/yaml_import.py"], ["—"],
         "schema with defaults and validation; the original's YAML import", severity="Low"),
    item("8", "src/models.py", [CNN + "test_eval_logits"],
         ["jaxkd/models/cnn.py", "jaxkd/models/layers.py"], ["torch_ref/cnn.py"],
         "AdaptiveCNN and torch-convention layers (BatchNorm, init)", severity="Low"),
    item("8", "src/vit.py", [VIT + "test_full_depth_preset_keys_counts_and_forward"],
         ["jaxkd/models/vit.py", "jaxkd/models/attention.py", "jaxkd/models/resize.py"], ["torch_ref/vit.py"],
         "DeiT/ViT, attention paths, torch-exact resizing", severity="Low"),
    item("8", "src/training.py", [TRAIN + "test_twenty_steps_match_torch"],
         ["jaxkd/train/steps.py", "jaxkd/train/optim.py", "jaxkd/train/checkpoint.py"], ["torch_ref/optim.py"],
         "the jitted train/eval steps, optimisers and schedules, checkpoints (the loop itself: jaxkd/train/loop.py)",
         severity="Low"),
    item("8", "src/distillation.py", [LOSS + "test_ss_distillation_loss",
                                      DINO + "test_intermediate_tokens_match_torch"],
         ["jaxkd/losses", "jaxkd/tasks/kd.py", "jaxkd/tasks/tokens.py", "jaxkd/tasks/teachers.py",
          "jaxkd/models/dinov2.py"],
         ["torch_ref/losses.py", "torch_ref/dinov2.py"],
         "losses, the two distillation tasks, teacher loading and the DINOv2 teacher", severity="Low"),
    item("8", "src/datasets.py", [T_AUG + "test_train_transform_end_to_end_matches_torchvision",
                                  T_PIPE + "test_train_batches_gather_the_permuted_examples"],
         ["jaxkd/data"], ["torch_ref/augment.py"],
         "sources, the device-side pipeline and every augmentation", severity="Low"),
    item("8", "src/evaluation.py", [T_TRAIN + "test_evaluate_and_predict_cli"],
         ["jaxkd/evaluate.py", "jaxkd/predict.py"], ["—"],
         "evaluation with flip TTA, prediction", severity="Low"),
    item("8", "src/visualization.py", [T_TRAIN + "test_run_writes_everything",
                                       T_TRAIN + "test_evaluate_and_predict_cli"],
         ["jaxkd/train/reporting.py"], ["—"],
         "training curves, confusion matrix, classification report (and predict's explanations)", severity="Low"),
    # ------------------------------------------------------------------ 9 integration points
    item("9.1", "DDPTrainer correctly wraps models",
         [T_TRAIN + "test_eight_devices_match_one",
          T_MP + "test_two_processes_with_coinciding_saves_match_one_process"],
         ["jaxkd.train.steps:replicate", "jaxkd.train.loop:_train@steps.replicate(state, mesh)"],
         ["—: torch_ref has no DDP"],
         "JAX equivalent of DDP: parameters and optimiser state replicated over the data mesh, the batch sharded on "
         "'data', gradients reduced by XLA in the jitted step: 8 simulated devices and 2 processes equal 1 device "
         "(parameters, test loss <= 1e-5)", severity="Critical"),
    item("9.1", "Loss functions handle both hard labels and soft labels",
         [LOSS + "test_cross_entropy_soft", LOSS + "test_distillation_loss",
          T_FEAT + "test_mixup_runs_on_soft_targets"],
         ["jaxkd.tasks.supervised:Supervised.ce",
          "jaxkd.train.evaluators:batch_dict"], ["torch_ref.losses:cross_entropy"],
         "int labels and soft targets through cross_entropy and the KD losses <= 1e-6 rel; the trainer passes soft "
         "targets only when MixUp/CutMix made them", REL),
    item("9.1", "Checkpoint save/load maintains all necessary state",
         [T_RES + "test_sigterm_saves_and_exits_then_resumes", T_RES + "test_corrupt_newest_checkpoint_falls_back"],
         ["jaxkd.train.checkpoint:Checkpoints.save", "jaxkd.train.checkpoint:Checkpoints.restore_newest_good"],
         ["—: no twin"],
         "the whole TrainState (parameters, BN statistics, optimiser state, step, SWA/EMA, loss scale, RNG) and the "
         "host state (epoch, early stopping, plateau): runs stopped by SIGTERM mid-epoch, or with a corrupt newest "
         "checkpoint, finish with parameters bit-identical (SHA-256) to an uninterrupted run", severity="Critical"),
    item("9.2", "All config fields are actually used",
         [SPEC + "test_every_config_field_is_read_or_documented_as_without_effect",
          CLS_DROP + "test_forward_with_fixed_draw_matches_torch",
          CLS_DROP + "test_float64_gradients_with_fixed_draw_match_torch",
          T_VIT + "test_cls_token_dropout_zero_changes_nothing", T_VIT + "test_cls_token_dropout_eval_ignores_it",
          T_VIT + "test_cls_token_dropout_fraction_is_p_under_jit", T_VIT + "test_cls_token_dropout_from_config"],
         ["jaxkd.config.schema:base_config", "jaxkd.models.vit:ClsTokenDropout.__call__"],
         ["torch_ref.vit:ClsTokenDropout.forward"],
         "every field's name is read somewhere in jaxkd (outside the schema and the YAML importer), or its schema "
         "line documents that it has no effect (model.dropout, kept for YAML compatibility). vit.cls_token_dropout "
         "(SPEC §7; the original's DeiT MNIST preset sets 0.1), the field jaxkd used to refuse: train-only, per "
         "sample, the cls token after the final LN replaced by its patch-token mean; with the draw fixed, jaxkd vs "
         "torch_ref <= 1e-5 fp32 (DeiT and ViT logits and tokens) and float64 gradients <= 1e-9 rel; controls (no "
         "replacement, the dist token replaced instead, the mean over dist and patches, the mask inverted) exceed "
         "them; p = 0 adds no state, eval ignores it, the replaced fraction is p within 4σ",
         [("", "never_read", "never read"), ("test_forward_with_fixed_draw", "^forward$", "cls-token dropout max|Δ|"),
          ("test_float64_gradients_with_fixed_draw", "^f64_grad_rel$", "its f64 grad rel. Δ")], "Medium"),
    item("9.2", "No hardcoded values",
         [SPEC_DEFAULTS, T_OPTIM + "test_optimizer_matches_torch",
          T_LAYERS + "test_cnn_dropout_stochastic_in_jitted_train_step_and_eval_deterministic"],
         ["jaxkd.config.schema:base_config@head_dropout=", "jaxkd.config.schema:base_config@momentum="],
         ["—"],
         "the original's hard-coded constants are fields whose defaults are the original's values (asserted): "
         "model.head_dropout 0.3, training.momentum 0.9 / nesterov, vit.ln_eps 1e-5, "
         "ss_distillation.projection_hidden_dim 512 and teacher_img_size 224, distillation.kd_normalize; the "
         "optimisers are built from the config", severity="Low"),
    item("9.2", "Config validation catches invalid combinations",
         [T_CFG + "test_bad_overrides_raise_one_clear_error", T_CFG + "test_unknown_key_in_a_preset_is_rejected",
          T_TRAIN + "test_batch_not_divisible_by_devices_is_a_config_error"],
         ["jaxkd.config:validate", "jaxkd.config.schema:_cross_checks"], ["—"],
         "per-field ranges and choices and cross-section rules (both KD modes, KD without dist token or teacher, "
         "in_channels / img_size vs the data, variant vs width, ...) raise one ConfigError naming field, value and "
         "what is allowed", severity="Medium"),
    item("9.3", "Teacher model loading and freezing",
         [T_DIST + "test_teacher_frozen_and_not_in_student_checkpoints", T_TEACH + "test_load_by_path_roundtrip",
          DINO + "test_official_layout"],
         ["jaxkd.tasks.kd:load_kd_teacher", "jaxkd.tasks.tokens:load_ss_teacher", "jaxkd.tasks.teachers:load_dinov2"],
         ["torch_ref.dinov2:DinoVisionTransformer"],
         "CNN/DeiT teachers from a jaxkd workdir or the original's .pth, DINOv2 from the official weight files (.pth, "
         "safetensors, npz): the teacher's weights and statistics are unchanged by training (digest) and not in the "
         "student's checkpoint; the official ViT-S/14 and ViT-g/14 layouts load", severity="Critical"),
    item("9.3", "Feature extraction at correct layers",
         [DINO + "test_intermediate_tokens_match_torch", VIT + "test_forward_eval_and_train_both_attention_paths",
          VIT + "test_token_layers_any_order_negative_and_repeated"],
         ["jaxkd.models.dinov2:DinoVisionTransformer.get_intermediate_layers", "jaxkd.models.vit:DeiT.forward_heads"],
         ["torch_ref.dinov2:DinoVisionTransformer.get_intermediate_layers", "torch_ref.vit:DeiT.forward_heads"],
         "teacher blocks [0, 2] and the last n via get_intermediate_layers (final LN applied, as the original) at the "
         "native and interpolated sizes, and the student's tokens after each chosen block (any order, negative and "
         "repeated indices; torch_ref takes them by forward hooks) vs torch <= 1e-5",
         [("test_intermediate", "max_abs_diff", "DINOv2 tokens max|Δ|")], "Critical"),
    item("9.3", "Token dimension alignment",
         [LOSS + "test_resize_tokens", LOSS + "test_ss_distillation_loss",
          VIT + "test_bilinear_16_to_8_is_2x2_mean_pool"],
         ["jaxkd.losses.ss:ss_distillation_loss@resize_tokens",
          "jaxkd.tasks.tokens:SelfSupervisedDistillation.trainable"],
         ["torch_ref.losses:ss_distillation_loss"],
         "teacher grid resized to the student's inside the loss (8×8 → 4×4 in the test) and both widths projected to "
         "projection_dim (384-d teacher, 192-d student → 256): <= 1e-6 rel", REL, deviation=TOKENS_256_DEV),
    item("9.4", "DistributedSampler correctly shuffles per-epoch",
         [T_PIPE + "test_epoch_permutation", T_PIPE + "test_train_batches_gather_the_permuted_examples",
          T_PIPE + "test_sharded_over_8_devices_equals_single_device"],
         ["jaxkd.data.pipeline:epoch_permutation"], ["—: DistributedSampler.set_epoch in the original"],
         "a new permutation per (seed, epoch), the same on every device and process (the global batch is then cut "
         "into disjoint shards), reproducible for resuming mid-epoch", severity="High"),
    item("9.4", "Augmentation applied at correct stage",
         [T_AUG + "test_train_transform_end_to_end_matches_torchvision"],
         ["jaxkd.data.augment:make_train_transform"], ["torch_ref.augment:to_tensor_normalize"],
         "uint8-domain ops (crop, flip, rotation / affine, ColorJitter, AutoAugment, RandAugment) before "
         "ToTensor + Normalize, Cutout after, as the original: bit-exact vs torchvision", severity="High"),
    item("9.4", "Dual-augment dataset",
         [T_PIPE + "test_teacher_clean_view_and_mix", T_PIPE + "test_sharded_over_8_devices_equals_single_device"],
         ["jaxkd.data.pipeline:DataPipeline._train_fn", "jaxkd.tasks.tokens:SelfSupervisedDistillation.teacher_input"],
         ["—: no twin"],
         "teacher_view='clean': the teacher gets the same images un-augmented and unmixed while the student's view "
         "is augmented and mixed; sharded identically", severity="Medium",
         deviation="The original fed the teacher the student's augmented and mixed batch; jaxkd's default "
         "data.augmentation.teacher_view='student' does the same, 'clean' is the dual-augment view. The teacher's "
         "input normalisation differs by default: jaxkd uses DINOv2's ImageNet statistics "
         "(ss_distillation.teacher_normalization='imagenet'); 'dataset' gives the original's CIFAR statistics.",
         dev_severity="Medium"),
]

