"""The paper's training recipe (section 3.1); every other config starts from this one.

Any field can be overridden on the command line: ``--config.batch_size=128``.
Durations are given in epochs, or in steps where ``num_train_steps`` > 0.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Model (vgg_jax.models.VGG).
    c.arch = "vgg16"
    c.num_classes = 1000
    c.width = 1.0
    c.fc_width = 0             # 0: round(4096 * width)
    c.dropout_rate = 0.5
    c.initializer = "auto"     # glorot | normal | he | auto (he with BatchNorm, else glorot)
    c.init_std = 0.01          # std of the paper's normal init
    c.dtype = "float32"        # computation dtype; bfloat16 keeps float32 parameters
    # Data.
    c.dataset = "imagenet2012"  # vgg_shapes | imagefolder:/path | a TFDS name
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.manual_dir = ml_collections.FieldReference(None, field_type=str)
    c.train_split = "train"
    c.eval_split = "validation"
    c.image_size = 224         # training crop
    c.train_scale_min = 256    # S: fixed when min == max, else jittered per image
    c.train_scale_max = 256
    c.eval_scale = 256         # Q for the single-crop validation during training
    c.train_crop = "scale"     # scale (the paper's) | inception (random-resized crop)
    c.pca_std = 0.1            # AlexNet's PCA colour shift; 0 turns it off
    c.mean_rgb = (123.68, 116.779, 103.939)
    c.std_rgb = (1.0, 1.0, 1.0)  # the paper only subtracts the mean
    c.shuffle_buffer = 16_384  # 0: the whole shard
    c.cache = False            # keep encoded images in memory
    c.data_shards = 0          # 0: one per process; fix it to keep the data order when the
                               # number of processes changes
    # Optimisation.
    c.batch_size = 256         # global, over all devices and hosts
    c.learning_rate = 0.01
    c.lr_scaling = "none"      # none | linear (x batch_size / 256)
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 5e-4
    c.schedule = "plateau"     # plateau | step | cosine | constant
    c.warmup_epochs = 0.0
    c.lr_decay_factor = 0.1
    c.lr_decay_epochs = (30, 60)  # for schedule=step
    c.plateau_patience = 2     # evaluations without improvement before dividing
    c.plateau_min_delta = 1e-3
    c.plateau_max_reductions = 3
    c.num_epochs = 74.0
    c.num_train_steps = 0      # > 0 overrides num_epochs
    # Recipes beyond the paper (README, "Training recipes"); all off by default.
    c.optimizer = "sgd"        # sgd (momentum, nesterov, L2 decay) | adamw | lars
    c.weight_decay_on = "kernels"  # kernels (conv/fc weights: not biases or BatchNorm) | all
    c.adam_b1 = 0.9            # adamw: decay of the first moment
    c.adam_b2 = 0.999          # adamw: decay of the second moment
    c.lars_trust_coefficient = 0.001  # lars: the layer-wise trust ratio's coefficient
    c.grad_clip_norm = 0.0     # > 0: clip the gradients' global norm
    c.grad_accum_steps = 1     # the batch as k micro-batches (same update, 1/k the memory)
    c.label_smoothing = 0.0
    c.mixup_alpha = 0.0        # > 0: mixup with lam ~ Beta(alpha, alpha)
    c.cutmix_alpha = 0.0       # > 0: CutMix with lam ~ Beta(alpha, alpha)
    c.mix_prob = 1.0           # probability that a batch is mixed
    c.mix_switch_prob = 0.5    # CutMix rather than mixup when both are on
    c.randaugment_ops = 0      # RandAugment's N (0: off), in the training input pipeline
    c.randaugment_magnitude = 9.0  # RandAugment's M, out of 10
    c.ema_decay = 0.0          # > 0: keep (and evaluate) a moving average of the weights
    c.init_from_ema = True     # init_from takes a checkpoint's EMA weights when it has them
    c.profile_steps = ""       # "START:END": trace those steps into workdir (TensorBoard)
    # Evaluation, logging, checkpoints (in epochs, or in steps where *_steps > 0).
    c.eval_every_epochs = 1.0
    c.eval_every_steps = 0
    c.eval_batch_size = 0      # 0: batch_size
    c.log_every_steps = 100
    c.checkpoint_every_epochs = 1.0
    c.checkpoint_every_steps = 0
    c.keep_checkpoints = 3
    c.async_checkpoints = True  # write while training goes on; False: a kill loses at most
                                # checkpoint_every_* steps
    c.skip_nonfinite = False   # skip steps with NaN/inf loss or gradients instead of stopping
    c.init_from = ""           # a workdir, checkpoints folder or convert --out to start from
    c.freeze = ""              # regex of layers kept fixed, e.g. 'conv.*|bn.*' (the features)
    c.seed = 0
    # Multi-process (vgg_jax.parallel.distributed): empty/-1 defer to JAX_* variables or the cluster.
    c.coordinator_address = ""  # host:port of process 0
    c.num_processes = 0
    c.process_id = -1
    return c
