"""Every fast path gives the fp32 reference's outputs: recomputing window attention, activation checkpointing
(identical gradients, BatchNorm statistics updated once), the one-stem K-prompt path, the loss without one-hot,
the fused AdamW, bf16 autocast (stated agreement), and the Predictor's input rules (issue 13 cases 9 and 10)."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rsam.losses import SegmentationLoss
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model, swin
from rsam.models.swin import SwinBlock, norm_mlp, shifted_window_mask, window_attention, window_order
from rsam.predict import ImageTooLarge, Predictor, postprocess, upsample_nearest
from rsam.text import Tokenizer


def small_config(**overrides) -> RemoteSAMConfig:
    """A 64² model with shifted windows, padding (16² tokens, window 6) and a 2-layer text encoder."""
    return RemoteSAMConfig(
        image_size=(64, 64),
        swin=SwinConfig(embed_dim=16, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=6, mlp_ratio=2.0),
        text=TextConfig(
            vocab_size=30522,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        ),
        pwam_heads=(1, 2, 1, 2),
        **overrides,
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    net = build_model(small_config())
    with torch.no_grad():  # make the logits depend visibly on the text and decide most pixels
        net.classifier.conv1_1.weight.mul_(50)
    return net.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def reference_attention(q, k, v, bias, mask, scale):
    """The official formula (lib/backbone.py WindowAttention): (q·scale)@kᵀ + bias (+ mask), softmax, @v."""
    attn = (q * scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)
    if mask is not None:
        nw, heads, n = mask.shape[0], q.shape[1], q.shape[2]
        attn = (attn.view(-1, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
    return attn.softmax(-1) @ v


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_forward_and_gradients_equal_the_formula(shifted):
    torch.manual_seed(0)
    batch, windows, heads, n, d = 2, 4, 3, 9, 5
    q, k, v = (torch.randn(batch * windows, heads, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(heads, n, n, dtype=torch.float64, requires_grad=True)
    mask = torch.randint(0, 2, (windows, n, n)).double() * -100.0 if shifted else None
    grad = torch.randn(batch * windows, heads, n, d, dtype=torch.float64)
    ours = window_attention(q, k, v, bias, mask, 0.37)
    ref = reference_attention(q, k, v, bias, mask, 0.37)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v, bias), grad), torch.autograd.grad(ref, (q, k, v, bias), grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def official_layout_block(block, x, h, w, mask):
    """lib/backbone.py SwinTransformerBlock's attention half, as the official code runs it: norm, zero padding to
    window multiples, cyclic shift, windows, qkv -> attention -> proj on every window token, then back."""
    attn, win, shift = block.attn, block.attn.window, block.shift
    b, _, c = x.shape
    heads, n = attn.num_heads, win * win
    y = F.pad(block.norm1(x).view(b, h, w, c), (0, 0, 0, (win - w % win) % win, 0, (win - h % win) % win))
    hp, wp = y.shape[1:3]
    y = torch.roll(y, (-shift, -shift), (1, 2)) if shift else y
    y = y.view(b, hp // win, win, wp // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
    q, k, v = attn.qkv(y).reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(n, n, heads)
    out = reference_attention(q, k, v, bias.permute(2, 0, 1), mask if shift else None, attn.scale)
    out = attn.proj(out.transpose(1, 2).reshape(-1, n, c))
    out = out.view(b, hp // win, wp // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    out = torch.roll(out, (shift, shift), (1, 2)) if shift else out
    return x + out[:, :h, :w].reshape(b, h * w, c)


@pytest.mark.parametrize(("h", "w", "shift"), [(13, 9, 3), (13, 9, 0), (12, 18, 3), (5, 7, 3)])
def test_swin_block_without_padding_tokens_equals_the_official_padded_layout(h, w, shift):
    """qkv on the grid's tokens plus one zero token, windows by one gather, proj after the padding is dropped:
    the official layout's outputs and gradients (every parameter, the qkv bias included, which the padding
    tokens carry), in float64, on grids that need padding on one side, both sides, or none, shifted or not."""
    torch.manual_seed(0)
    block = SwinBlock(12, 3, 6, shift, 2.0, True, 0.0, 1e-5).double().train()
    with torch.no_grad():
        block.attn.qkv.bias.normal_()
        block.attn.relative_position_bias_table.normal_()
    win = 6
    mask = shifted_window_mask(-(-h // win) * win, -(-w // win) * win, win, max(shift, 1)).double()
    x = torch.randn(2, h * w, 12, dtype=torch.float64, requires_grad=True)
    ours = block(x, h, w, mask)
    ref = official_layout_block(block, x, h, w, mask)
    ref = ref + block.mlp(block.norm2(ref))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ours)
    params = [x, *block.parameters()]
    for a, b in zip(torch.autograd.grad(ours, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def _seed_with_kept(batch: int, keep: float, draws: int, wanted) -> int:
    """A seed whose first ``draws`` per-sample keep draws (``DropPath``'s, from the host generator) match ``wanted``."""
    for seed in range(10_000):
        torch.manual_seed(seed)
        counts = [int(torch.empty(batch).bernoulli_(keep).sum()) for _ in range(draws)]
        if wanted(counts):
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize("case", ["some", "all", "none"])
def test_drop_path_runs_the_branch_only_on_kept_samples_and_equals_the_official_formula(case, monkeypatch):
    """Stochastic depth: a Swin block in training equals the official ``x + branch(x) * mask / keep`` (the branch
    computed for every sample, the dropped ones multiplied by zero), outputs and all gradients in float64, with the
    same draws; and each branch ran on the kept samples only (some, all, or none of the batch kept)."""
    batch, h, w, win, shift, p = 5, 7, 9, 4, 2, 0.5
    wanted = {
        "some": lambda counts: all(0 < n < batch for n in counts) and counts[0] != counts[1],
        "all": lambda counts: counts == [batch, batch],
        "none": lambda counts: counts == [0, 0],
    }[case]
    seed = _seed_with_kept(batch, 1 - p, 2, wanted)
    torch.manual_seed(0)
    block = SwinBlock(8, 2, win, shift, 2.0, True, p, 1e-5).double().train()
    mask = shifted_window_mask(8, 12, win, shift).double()
    x = torch.randn(batch, h * w, 8, dtype=torch.float64, requires_grad=True)
    seen = []  # the batch each branch ran on: the attention's input, and the MLP branch's
    hook = block.attn.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    monkeypatch.setattr(swin, "norm_mlp", lambda norm, mlp, t: seen.append(t.shape[0]) or norm_mlp(norm, mlp, t))
    torch.manual_seed(seed)
    ours = block(x, h, w, mask)
    hook.remove()
    monkeypatch.undo()
    torch.manual_seed(seed)
    kept = [torch.empty(batch).bernoulli_(1 - p).double().view(batch, 1, 1) for _ in range(2)]
    ref = x + block.attn(block.norm1(x), h, w, shift, mask) * kept[0] / (1 - p)
    ref = ref + block.mlp(block.norm2(ref)) * kept[1] / (1 - p)
    assert seen == [int(k.sum()) for k in kept if k.sum() > 0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ours)
    params = [x, *block.parameters()]
    ref_grads = torch.autograd.grad(ref, params, grad, allow_unused=True)
    for name, a, b in zip(
        ["x", *dict(block.named_parameters())], torch.autograd.grad(ours, params, grad, allow_unused=True), ref_grads
    ):
        if a is None:  # a branch no sample kept is not in the graph: its gradient is the reference's zero
            assert case == "none" and name != "x"
            a = torch.zeros_like(b)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)
    block.eval()  # eval: no draws, every branch on every sample, unscaled
    state = torch.get_rng_state()
    with torch.no_grad():
        ours = block(x, h, w, mask)
        ref = x + block.attn(block.norm1(x), h, w, shift, mask)
        ref = ref + block.mlp(block.norm2(ref))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_window_order_is_pad_shift_partition_of_the_raster_grid():
    """The gather/scatter indices against torch's own pad -> roll -> window partition of an index grid."""
    h, w, win, shift = 7, 11, 4, 2
    grid = F.pad(torch.arange(h * w).view(1, h, w), (0, (win - w % win) % win, 0, (win - h % win) % win), value=h * w)
    grid = torch.roll(grid, (-shift, -shift), (1, 2))
    hp, wp = grid.shape[1:]
    expected = grid.view(hp // win, win, wp // win, win).permute(0, 2, 1, 3).reshape(-1)
    gather, scatter = window_order(3, h, w, win, shift, torch.device("cpu"))
    per_sample = h * w + 1  # and one padding token
    assert torch.equal(gather, torch.cat([expected + i * per_sample for i in range(3)]))
    tokens = torch.cat([torch.arange(h * w) + i * per_sample for i in range(3)])
    assert torch.equal(gather[scatter], tokens)
    with torch.inference_mode():  # a cached index first made under inference mode still serves autograd
        window_order.cache_clear()
        gather, _ = window_order(1, h, w, win, shift, torch.device("cpu"))
    assert not gather.is_inference()


def test_training_attention_runs_the_fused_kernel_not_the_attention_matrix():
    """Under autograd the forward runs PyTorch's fused CPU attention kernel for shifted and unshifted blocks; a
    mask that requires grad (the relative-position bias) would send it to the math path, which builds the
    (windows, heads, n, n) attention matrix."""
    torch.manual_seed(0)
    blocks = [SwinBlock(16, 2, 6, shift, 2.0, True, 0.0, 1e-5).train() for shift in (0, 3)]
    mask = shifted_window_mask(12, 12, 6, 3)
    x = torch.randn(1, 144, 16, requires_grad=True)
    with torch.profiler.profile() as prof:
        for block in blocks:
            x = block(x, 12, 12, mask)
    names = [e.name for e in prof.events()]
    assert names.count("aten::_scaled_dot_product_flash_attention_for_cpu") == 2, names
    assert "aten::_scaled_dot_product_attention_math" not in names


@pytest.mark.parametrize("dtype", [torch.float64, "bf16-autocast"])
def test_swin_mlp_branch_recomputed_in_backward_equals_the_plain_modules(dtype):
    """norm2 -> fc1 -> GELU -> fc2 with the norm and fc1 recomputed in backward: the plain modules' outputs and
    gradients (for x and all six parameters), in float64 and under bf16 autocast."""
    torch.manual_seed(0)
    block = SwinBlock(32, 2, 6, 3, 4.0, True, 0.0, 1e-5)
    with torch.no_grad():
        for p in block.norm2.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a non-trivial affine step
    block = block.double() if dtype == torch.float64 else block
    x = torch.randn(2, 100, 32, dtype=block.norm2.weight.dtype, requires_grad=True)
    grad = torch.randn(2, 100, 32, dtype=x.dtype)
    params = [x, *block.norm2.parameters(), *block.mlp.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float64):
        ours = norm_mlp(block.norm2, block.mlp, x)
        plain = block.mlp(block.norm2(x))
    assert ours.grad_fn is not None and "NormMlp" in type(ours.grad_fn).__name__
    assert ours.dtype == plain.dtype
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-12)
    for a, b in zip(
        torch.autograd.grad(ours.to(x.dtype), params, grad), torch.autograd.grad(plain.to(x.dtype), params, grad)
    ):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


def _grads(net, images, ids, mask, target, seed):
    torch.manual_seed(seed)  # dropout / drop-path masks
    net.zero_grad(set_to_none=True)
    loss = SegmentationLoss()(net(images, ids, mask), target)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _saved_bytes_and_grads(net, images, ids, mask, target):
    """Bytes autograd keeps for backward (distinct storages, parameters excluded) and the gradients."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.manual_seed(7)
        net.zero_grad(set_to_none=True)
        loss = SegmentationLoss()(net(images, ids, mask), target)
    loss.backward()
    return sum(storages.values()), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def test_training_recompute_regions_keep_the_gradients_and_save_less(monkeypatch):
    """The always-on recompute regions (fusion + gates, rotated-conv routing, upsample + concat before each decoder
    conv) and the MLP branch: bit-identical gradients and BatchNorm statistics to the plain autograd graph, and
    fewer bytes kept for backward."""
    import rsam.models.decoder as decoder
    import rsam.models.remotesam as remotesam
    import rsam.models.swin as swin

    torch.manual_seed(1)
    fast = build_model(small_config(fusion_drop=0.1)).train()
    plain = build_model(small_config(fusion_drop=0.1)).train()
    plain.load_state_dict(fast.state_dict())
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(1000, 3000, (2, 20))
    mask, target = torch.ones_like(ids), (torch.rand(2, 64, 64) > 0.7).long()
    fast_bytes, fast_grads = _saved_bytes_and_grads(fast, images, ids, mask, target)
    for module in (decoder, remotesam):
        monkeypatch.setattr(module, "training_recompute", lambda *args: False)
    monkeypatch.setattr(swin, "norm_mlp", lambda norm, mlp, x: mlp(norm(x)))
    plain_bytes, plain_grads = _saved_bytes_and_grads(plain, images, ids, mask, target)
    assert fast_grads.keys() == plain_grads.keys() and len(fast_grads) > 100
    for name in fast_grads:
        assert torch.equal(fast_grads[name], plain_grads[name]), name
    for (name, a), b in zip(fast.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name
    assert fast_bytes < 0.75 * plain_bytes, (fast_bytes, plain_bytes)


def test_activation_checkpointing_gives_identical_gradients_and_batchnorm_updates_once():
    torch.manual_seed(1)
    plain = build_model(small_config(fusion_drop=0.1)).train()
    checkpointed = build_model(small_config(fusion_drop=0.1), activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 64, 64)
    ids = torch.randint(1000, 3000, (2, 20))
    mask = torch.ones_like(ids)
    target = (torch.rand(2, 64, 64) > 0.7).long()
    loss_a, grads_a = _grads(plain, images, ids, mask, target, seed=7)
    loss_b, grads_b = _grads(checkpointed, images, ids, mask, target, seed=7)
    assert loss_a == loss_b
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 100
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    # BatchNorm running statistics: updated once per step, as without checkpointing (not again when recomputed)
    buffers_a, buffers_b = dict(plain.named_buffers()), dict(checkpointed.named_buffers())
    for name, value in buffers_a.items():
        assert torch.equal(value, buffers_b[name]), name
    assert int(buffers_b["classifier.bn1_2.num_batches_tracked"]) == 1


def test_one_stem_for_many_prompts_equals_one_forward_per_prompt(model, tokenizer):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    texts = ["trees in the image", "the road on the left", "building in the image", "a small white car", "water"]
    predictor = Predictor(model, tokenizer)  # chunk_size="auto": batches of 1, 2, ... are timed
    batched = predictor.predict(image, texts)
    assert predictor._tuned in (1, 2, 4)
    from rsam.preprocess import normalize, resize_image

    x = normalize(resize_image(image, (64, 64)))[None]
    for text, found in zip(texts, batched):
        ids, mask = tokenizer([text])
        with torch.no_grad():
            prob, hard = postprocess(model(x, ids, mask), (50, 70))  # the plain forward, one prompt
        np.testing.assert_allclose(found.prob, prob[0].numpy(), rtol=0, atol=1e-5)
        decided = np.abs(prob[0].numpy() - 0.5) > 1e-4
        assert np.array_equal(found.mask[decided], hard[0].numpy()[decided])
    fixed = Predictor(model, tokenizer, chunk_size=3).predict(image, texts)
    for a, b in zip(batched, fixed):
        np.testing.assert_allclose(a.prob_model, b.prob_model, rtol=0, atol=1e-5)
    assert np.abs(batched[0].prob - batched[1].prob).max() > 1e-3  # the text reaches the output


@pytest.mark.parametrize("size", [(50, 70), (64, 64), (300, 500), (7, 129)])
def test_lazy_full_size_maps_equal_torch_nearest_interpolation(size):
    values = np.random.default_rng(1).random((64, 48)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(values)[None, None], size=size)[0, 0].numpy()
    assert np.array_equal(upsample_nearest(values, size), expected)


def test_bf16_autocast_agrees_with_fp32(model, tokenizer):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    texts = ["trees in the image", "the road on the left"]
    fp32 = Predictor(model, tokenizer, chunk_size=2).predict(image, texts)
    bf16 = Predictor(model, tokenizer, chunk_size=2, precision="bf16").predict(image, texts)
    for a, b in zip(fp32, bf16):
        assert b.prob.dtype == np.float32
        assert np.abs(a.prob - b.prob).max() < 0.15
        assert (a.mask == b.mask).mean() > 0.97
    with pytest.raises(ValueError, match="precision"):
        Predictor(model, tokenizer, precision="fp8")


def test_bf16_inference_keeps_no_second_copy_of_the_weights_and_gives_the_cached_result(model, tokenizer):
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    texts = ["trees in the image", "the road on the left"]
    seen = []
    hook = model.classifier.conv1_1.register_forward_hook(lambda *_: seen.append(torch.is_autocast_cache_enabled()))
    try:
        uncached = Predictor(model, tokenizer, chunk_size=1, precision="bf16").predict(image, texts)
    finally:
        hook.remove()
    assert seen == [False, False]  # one forward per prompt, none with autocast's weight cache
    predictor = Predictor(model, tokenizer, chunk_size=1, precision="bf16")
    predictor._autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # autocast's default: cached copies
    for a, b in zip(uncached, predictor.predict(image, texts)):
        assert np.array_equal(a.prob, b.prob) and np.array_equal(a.mask, b.mask)


def test_loss_without_one_hot_equals_the_official_formula_and_its_gradient():
    torch.manual_seed(4)
    logits = torch.randn(3, 2, 17, 23, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(3, 17, 23) > 0.6).long()
    target[2] = 0  # a sample without foreground
    ours = SegmentationLoss()(logits, target)
    # loss/loss.py: 0.9 * CE(weight [0.9, 1.1]) + 0.1 * sum over (sample, class) of 1 - Dice(softmax, one-hot)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).double()
    inter, union = (probs * onehot).sum((2, 3)), (probs + onehot).sum((2, 3))
    dice = (1 - (2 * inter + 1e-6) / (union + 1e-6)).sum()
    ce = F.cross_entropy(logits, target, weight=torch.tensor([0.9, 1.1], dtype=torch.float64))
    reference = 0.9 * ce + 0.1 * dice
    torch.testing.assert_close(ours.double(), reference, rtol=1e-6, atol=0)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(g_ours.double(), g_ref, rtol=1e-4, atol=1e-7)


def test_fused_adamw_matches_the_reference_update():
    from rsam.lit.module import RemoteSAMModule

    module = RemoteSAMModule(small_config().to_dict(), {"lr": 1e-3})
    optimizer = module.make_optimizer()
    assert optimizer.defaults["fused"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    reference = torch.optim.AdamW(
        [{**g, "params": [p.detach().clone().requires_grad_() for p in g["params"]]} for g in optimizer.param_groups]
    )
    twins = [p for group in reference.param_groups for p in group["params"]]
    for _ in range(2):
        for p, q in zip(params, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_fit_drops_the_gradients_after_each_update_and_keeps_them_while_accumulating(tmp_path):
    """Lightning zero-grads after the next forward; the module drops them right after the update, so a forward never
    runs next to last step's gradients. Inside an accumulation window they stay (the window's sum)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from rsam.lit.module import RemoteSAMModule

    class Record(pl.Callback):
        def __init__(self):
            self.grads_at_start, self.grads_at_update = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.grads_at_start.append(any(p.grad is not None for p in pl_module.parameters()))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.grads_at_update.append(any(p.grad is not None for g in optimizer.param_groups for p in g["params"]))

    torch.manual_seed(0)
    ids = torch.randint(1000, 3000, (2, 20))
    batches = [
        {
            "image": torch.randn(2, 3, 64, 64),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mask": (torch.rand(2, 64, 64) > 0.7).long(),
        }
        for _ in range(4)
    ]
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        accumulate_grad_batches=2,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        RemoteSAMModule(small_config().to_dict(), {"lr": 1e-3}), train_dataloaders=DataLoader(batches, batch_size=None)
    )
    assert record.grads_at_start == [False, True, False, True]
    assert record.grads_at_update == [True, True]


def test_model_runtime_recipe_fields_reach_the_module():
    from rsam.lit.build import build_module
    from rsam.recipes import load_recipe, model_config

    recipe = load_recipe("demo", ["model.activation_checkpointing=true"], check_files=False)
    module = build_module(recipe, initialise=False)
    assert module.model.activation_checkpointing and not module.runtime["compile"]
    assert "activation_checkpointing" not in model_config(recipe).to_dict()  # not part of the architecture


def test_bf16_mixed_training_step_keeps_the_loss_float32(model):
    net = build_model(small_config()).train()
    ids = torch.randint(1000, 3000, (2, 20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(torch.randn(2, 3, 64, 64), ids, torch.ones_like(ids))
        loss = SegmentationLoss()(logits, torch.zeros(2, 64, 64, dtype=torch.long))
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in net.parameters() if p.grad is not None)


# ---- issue 13, cases 9 and 10: bounded memory for plain images, text rules ------------------------------------------
def test_a_plain_image_above_the_limit_gets_one_line_pointing_to_tiling(model, tokenizer, tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    predictor = Predictor(model, tokenizer, max_pixels=2000)
    for image in (path, str(path), np.zeros((40, 60, 3), np.uint8)):
        with pytest.raises(ImageTooLarge, match=r"60x40 .* limit .*rsam segment SCENE\.tif --tile") as err:
            predictor.predict(image, "a car")
        assert "\n" not in str(err.value)


def test_pil_decompression_bomb_becomes_the_same_message(model, tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses files above 2x this before decoding
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: larger than PIL's decompression limit .* --tile"):
        Predictor(model, tokenizer).predict(path, "a car")


def test_prompt_count_does_not_multiply_full_size_copies(model, tokenizer):
    image = np.zeros((300, 400, 3), np.uint8)
    found = Predictor(model, tokenizer, chunk_size=2).predict(image, ["a car", "a road", "a tree"])
    for item in found:  # only model-size maps are held per prompt; full size is made when read
        assert item.prob_model.shape == (64, 64) and item.prob_model.nbytes == 64 * 64 * 4
        assert item.prob.shape == (300, 400) and item.mask.dtype == np.uint8


def test_empty_text_is_refused_and_all_unknown_text_warns(model, tokenizer, caplog):
    image = np.zeros((20, 20, 3), np.uint8)
    predictor = Predictor(model, tokenizer)
    for bad in ("", "   ", ["a car", "\t"]):
        with pytest.raises(ValueError, match="expression .* is empty"):
            predictor.predict(image, bad)
    with caplog.at_level(logging.WARNING, logger="rsam.text"):
        predictor.predict(image, ["\u2603\u2603 \u16a0", "a car"])
    warned = [r.getMessage() for r in caplog.records if "unknown" in r.getMessage()]
    assert len(warned) == 1 and "\u2603" in warned[0]


def test_mlp_with_recomputed_gelu_equals_the_two_op_composition():
    from rsam.models.swin import Mlp

    torch.manual_seed(5)
    mlp = Mlp(6, 12).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    ours = mlp(x)  # grad enabled: the recomputing path
    ref = mlp.fc2(F.gelu(mlp.fc1(x)))
    grad = torch.randn_like(ours)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    params = (x, mlp.fc1.weight, mlp.fc2.weight, mlp.fc2.bias)
    for a, b in zip(torch.autograd.grad(ours, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
