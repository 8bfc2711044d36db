"""ms_deform_attn on the CPU: the reference against the spec, every CPU backend against the fp64
reference, backend selection, errors, torch.library registration and the module-level gradients."""
from __future__ import annotations

import pytest
import torch

import ms_deform_attn as msda
from ms_deform_attn import extension
from ops_cases import (CASES, WIDE_CASES, Case, adapter_msdeformattn, level_tensors, make_inputs, oracle, pixel_locations,
                       rel_err)

CPU_BACKENDS = ["reference", "native"]


@pytest.fixture(scope="module")
def native_cpu() -> bool:
    """Loads the compiled CPU kernels, building them once (~15 s) if a compiler is present."""
    if not extension.native_available("cpu", jit=True):
        pytest.skip(f"C++ kernels cannot be built here: {extension.unavailable_reason('cpu')}")
    return True


def backend_or_skip(name: str, request: pytest.FixtureRequest) -> str:
    if name == "native":
        request.getfixturevalue("native_cpu")
    return name


def spec_sample(value_level: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Spec model.md section 7, written out literally for one (level, head): value_level (H, W, D)."""
    height, width, d = value_level.shape
    h_im, w_im = y * height - 0.5, x * width - 0.5
    out = torch.zeros(d, dtype=value_level.dtype)
    if not (h_im > -1 and w_im > -1 and h_im < height and w_im < width):
        return out
    h0, w0 = int(torch.floor(torch.tensor(h_im))), int(torch.floor(torch.tensor(w_im)))
    lh, lw = h_im - h0, w_im - w0
    for hh, ww, weight in ((h0, w0, (1 - lh) * (1 - lw)), (h0, w0 + 1, (1 - lh) * lw),
                           (h0 + 1, w0, lh * (1 - lw)), (h0 + 1, w0 + 1, lh * lw)):
        if 0 <= hh < height and 0 <= ww < width:
            out += weight * value_level[hh, ww]
    return out


def test_reference_matches_spec_formula():
    case = Case(2, ((4, 5), (3, 2)), 5, 2, 3, 2)
    value, shapes, starts, loc, weights = make_inputs(case, seed=1)
    out = msda.ms_deform_attn_reference(value, shapes, starts, loc, weights)
    expected = torch.zeros_like(out).view(case.n, case.lq, case.m, case.d)
    for n in range(case.n):
        for q in range(case.lq):
            for m in range(case.m):
                for level, (h, w) in enumerate(case.levels):
                    start = int(starts[level])
                    value_level = value[n, start:start + h * w, m].view(h, w, case.d)
                    for p in range(case.p):
                        x, y = loc[n, q, m, level, p].tolist()
                        expected[n, q, m] += weights[n, q, m, level, p] * spec_sample(value_level, x, y)
    assert rel_err(out, expected.view_as(out)) < 1e-12


def test_reference_gradcheck_fp64():
    case = Case(1, ((3, 4), (2, 3)), 3, 2, 2, 2)
    value, shapes, starts, loc, weights = make_inputs(case, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, lo, w: msda.ms_deform_attn_reference(v, shapes, starts, lo, w), (value, loc, weights))


def test_native_gradcheck_fp64(native_cpu):
    case = Case(1, ((3, 4), (2, 3)), 3, 2, 3, 2)
    value, shapes, starts, loc, weights = make_inputs(case, seed=3, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, lo, w: msda.ms_deform_attn(v, shapes, starts, lo, w, backend="native"), (value, loc, weights))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{len(c.levels)}P{c.p}D{c.d}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_backend_matches_fp64_reference(backend, case, dtype, request):
    backend = backend_or_skip(backend, request)
    seed = 2 * CASES.index(case) + (dtype == torch.float32)
    value, shapes, starts, loc, weights = make_inputs(case, seed=seed, dtype=dtype, requires_grad=True)
    out = msda.ms_deform_attn(value, shapes, starts, loc, weights, backend=backend)
    assert out.dtype == dtype and out.shape == (case.n, case.lq, case.m * case.d)
    grad_out = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, (value, loc, weights), grad_out)
    ref = oracle(value, shapes, starts, loc, weights, grad_out)
    tol = 1e-11 if dtype == torch.float64 else 1e-5
    for name, got, want in zip(("out", "grad_value", "grad_loc", "grad_weights"), (out, *grads), ref):
        assert rel_err(got, want) < tol, f"{backend} {name}: {rel_err(got, want)}"


@pytest.mark.parametrize("case", WIDE_CASES, ids=lambda c: f"L{len(c.levels)}S{c.levels[0][0]}Q{c.lq}D{c.d}")
def test_native_on_wide_maps(case, native_cpu):
    """Larger maps, many samples per value row, samples on and beside pixel centres (fp64)."""
    value, shapes, starts, loc, weights = make_inputs(case, seed=11 + WIDE_CASES.index(case), requires_grad=True,
                                                      locations=pixel_locations)
    out = msda.ms_deform_attn(value, shapes, starts, loc, weights, backend="native")
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, (value, loc, weights), grad_out)
    ref = oracle(value, shapes, starts, loc, weights, grad_out)
    for name, got, want in zip(("out", "grad_value", "grad_loc", "grad_weights"), (out, *grads), ref):
        assert rel_err(got, want) < 1e-11, f"{name}: {rel_err(got, want)}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_within_1e2(backend, dtype, request):
    backend = backend_or_skip(backend, request)
    case = CASES[2]
    value, shapes, starts, loc, weights = make_inputs(case, seed=5, dtype=dtype, requires_grad=True)
    out = msda.ms_deform_attn(value, shapes, starts, loc, weights, backend=backend)
    assert out.dtype == dtype
    grad_out = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, (value, loc, weights), grad_out)
    assert grads[0].dtype == dtype and grads[1].dtype == torch.float32 and grads[2].dtype == dtype
    ref = oracle(value, shapes, starts, loc, weights, grad_out)
    for name, got, want in zip(("out", "grad_value", "grad_loc", "grad_weights"), (out, *grads), ref):
        assert rel_err(got, want) < 1e-2, f"{backend} {name}: {rel_err(got, want)}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_kernel_window_edges(backend, request):
    """Exactly on the window edge h = -1 or w = -1 (and beyond size) a sample reads 0 and has no
    gradient; just inside, the border corner contributes with weight -> 0."""
    backend = backend_or_skip(backend, request)
    shapes, starts, s = level_tensors(((4, 8),))
    value = torch.randn(1, s, 1, 4, dtype=torch.float64, requires_grad=True)
    xs = [-0.5 / 8, 1.0 + 0.5 / 8, -1.0, 2.0, float("nan"), 0.3]
    ys = [0.5, 0.5, 0.5, 0.5, 0.5, -0.5 / 4]
    loc = torch.tensor([[x, y] for x, y in zip(xs, ys)], dtype=torch.float64)
    loc = loc.view(1, len(xs), 1, 1, 1, 2).requires_grad_()
    weights = torch.ones(1, len(xs), 1, 1, 1, dtype=torch.float64, requires_grad=True)
    out = msda.ms_deform_attn(value, shapes, starts, loc, weights, backend=backend)
    if backend == "reference":  # grid_sample: same values; NaN locations propagate
        assert torch.equal(out[0, :4], torch.zeros(4, 4, dtype=torch.float64))
        return
    assert torch.equal(out, torch.zeros_like(out))
    grads = torch.autograd.grad(out, (value, loc, weights), torch.ones_like(out))
    for grad in grads:
        assert torch.equal(grad, torch.zeros_like(grad))


def test_native_writes_every_output_element(native_cpu):
    """Outputs come from torch.empty, NaN-filled in deterministic mode: a skipped element stays NaN."""
    case = CASES[3]
    value, shapes, starts, loc, weights = make_inputs(case, seed=7, dtype=torch.float32)
    loc = loc.to(torch.float32)
    grad_out = torch.randn(case.n, case.lq, case.m * case.d)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.utils.deterministic.fill_uninitialized_memory
        out = torch.ops.ms_deform_attn.forward(value, shapes, starts, loc, weights)
        grads = torch.ops.ms_deform_attn.backward(grad_out, value, shapes, starts, loc, weights, False)
    finally:
        torch.use_deterministic_algorithms(previous)
    ref = oracle(value, shapes, starts, loc, weights, grad_out)
    for got, want in zip((out, *grads), ref):
        assert rel_err(got, want) < 1e-5


def test_forward_streams_only_without_a_gradient(native_cpu, monkeypatch):
    """native_forward asks the operator to stream its inputs (no backward reads them again) exactly
    when no gradient will be computed; the result is the same either way."""
    case = CASES[3]
    value, shapes, starts, loc, weights = make_inputs(case, seed=12, dtype=torch.float32)
    operator = torch.ops.ms_deform_attn.forward
    seen = []

    def spy(*args):
        seen.append(args[5])
        return operator(*args)

    monkeypatch.setattr(torch.ops.ms_deform_attn, "forward", spy)
    outs = [extension.native_forward(value, shapes, starts, loc, weights)]
    with torch.no_grad():
        outs.append(extension.native_forward(value, shapes, starts, loc.requires_grad_(), weights))
    outs.append(extension.native_forward(value, shapes, starts, loc, weights))
    outs[-1].sum().backward()
    assert seen == [True, True, False]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2].detach())
    assert loc.grad is not None and torch.isfinite(loc.grad).all()


def test_cpu_selection_and_forcing(native_cpu):
    case = CASES[1]
    value, shapes, starts, loc, weights = make_inputs(case, seed=8, dtype=torch.float32)
    assert msda.select_backend(value, loc.shape[3]) == "native"
    with msda.use_backend("reference"):
        assert msda.get_backend() == "reference"
        ref = msda.ms_deform_attn(value, shapes, starts, loc, weights)
    assert msda.get_backend() is None
    assert rel_err(msda.ms_deform_attn(value, shapes, starts, loc, weights), ref.double()) < 1e-5
    with pytest.raises(ValueError, match="unknown backend"):
        msda.set_backend("fast")


def test_cpu_selection_without_compiled_kernels(monkeypatch):
    monkeypatch.setitem(extension._STATUS, "cpu", False)
    monkeypatch.setattr(extension, "_JIT_TRIED", {"cpu"})
    value = make_inputs(CASES[0], seed=9, dtype=torch.float32)[0]
    assert msda.select_backend(value, 1) == "reference"


@pytest.mark.parametrize("bad, message", [
    (lambda v, s, i, lo, w: (v[0], s, i, lo, w), "value must be"),
    (lambda v, s, i, lo, w: (v, s, i, lo[..., :1], w), "sampling_locations must be"),
    (lambda v, s, i, lo, w: (v, s, i, lo, w[:, :1]), "attention_weights must be"),
    (lambda v, s, i, lo, w: (v, s.float(), i, lo, w), "spatial_shapes must be an integer"),
    (lambda v, s, i, lo, w: (v, s[:1], i, lo, w), "spatial_shapes must be"),
    (lambda v, s, i, lo, w: (v.int(), s, i, lo, w), "value must be float"),
])
def test_bad_input_is_named(bad, message):
    args = make_inputs(CASES[1], seed=10, dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        msda.ms_deform_attn(*bad(*args))


def test_torch_library_registration(native_cpu):
    """Schema, fake kernels and autograd pass opcheck; torch.compile traces through in one graph."""
    case = Case(1, ((3, 4), (2, 2)), 5, 2, 4, 2)
    value, shapes, starts, loc, weights = make_inputs(case, seed=11, dtype=torch.float32, requires_grad=True)
    loc = loc.detach().float().requires_grad_()
    torch.library.opcheck(torch.ops.ms_deform_attn.forward.default, (value, shapes, starts, loc, weights))
    torch.library.opcheck(torch.ops.ms_deform_attn.forward.default, (value, shapes, starts, loc, weights, True))

    def step(v, lo, w):
        return msda.ms_deform_attn(v, shapes, starts, lo, w, backend="native").square().sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss = compiled(value, loc, weights)
    grads = torch.autograd.grad(loss, (value, loc, weights))
    eager = step(value, loc, weights)
    expected = torch.autograd.grad(eager, (value, loc, weights))
    assert torch.allclose(loss, eager)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_module_training_step_gradients_agree(native_cpu):
    """The model's MSDeformAttn (helper "adapter"): one step's parameter gradients per backend."""
    module_class = adapter_msdeformattn()
    if module_class is None:
        pytest.skip("the adapter's MSDeformAttn module is not in this checkout")
    torch.manual_seed(0)
    attn = module_class(d_model=32, n_levels=3, n_heads=4, n_points=4, ratio=0.5)
    shapes, starts, s = level_tensors(((8, 6), (4, 3), (2, 2)))
    query = torch.randn(2, 10, 32)
    ref_points = torch.rand(2, 10, 3, 2)
    feats = torch.randn(2, s, 32)
    grads = {}
    for backend in CPU_BACKENDS:
        attn.zero_grad()
        with msda.use_backend(backend):
            attn(query, ref_points, feats, shapes, starts).square().mean().backward()
        grads[backend] = {k: p.grad.clone() for k, p in attn.named_parameters()}
    for k, g in grads["native"].items():
        assert rel_err(g, grads["reference"][k].double()) < 1e-5, k


def test_fallback_warning_when_cuda_kernels_missing(monkeypatch):
    """A CUDA tensor and no built kernels: the reference, with one warning that says how to build."""
    from ms_deform_attn import dispatch

    monkeypatch.setitem(extension._STATUS, "cuda", False)
    monkeypatch.setitem(extension._ERRORS, "cuda", "not built")
    monkeypatch.setattr(extension, "_JIT_TRIED", {"cuda"})
    monkeypatch.setattr(dispatch, "_WARNED", set())

    class CudaStandIn:  # what select_backend reads of a CUDA value tensor
        device = torch.device("cuda")
        shape = (1, 4, 1, 2)

    with pytest.warns(RuntimeWarning, match="make.sh") as caught:
        names = {dispatch.select_backend(CudaStandIn(), 1) for _ in range(3)}
    assert names == {"reference"} and len(caught) == 1


def test_profile_kernels_helpers():
    """Kernel names as the profile table shows them; --only-level moves the other levels outside;
    --timeline averages each kernel's start and end over the steps, from each step's first kernel."""
    from ms_deform_attn.profile_kernels import kernel_name, restrict_levels, timeline

    assert kernel_name("void msda::(anonymous namespace)::tile_bin_kernel<true>(long const*, int)") == \
        "tile_bin_kernel<true>"
    assert kernel_name("void msda::(anonymous namespace)::tile_grad_kernel<__nv_bfloat16, 32>(int)") == \
        "tile_grad_kernel"
    loc = torch.rand(2, 5, 3, 4, 2, 2)
    kept = restrict_levels(loc, 1)
    assert torch.equal(kept[:, :, :, 1], loc[:, :, :, 1])
    assert (kept[:, :, :, [0, 2, 3]] == -1).all()
    assert (restrict_levels(loc, -1) == -1).all()
    kernels = [(100.0, 110.0, "fwd"), (111.0, 115.0, "bwd"), (200.0, 212.0, "fwd"), (214.0, 216.0, "bwd")]
    assert timeline(kernels, 2) == [("fwd", 0.0, 11.0), ("bwd", 12.5, 15.5)]
    assert timeline(kernels[:3], 2) == []  # steps of different lengths
    swapped = kernels[:2] + [(200.0, 201.0, "bwd"), (202.0, 203.0, "fwd")]
    assert timeline(swapped, 2) == []  # steps launching different sequences


def test_sweep_queries_round_size():
    """A round of the region-order forward: 32 pieces per SM, a piece being the (query, head) groups
    of one warp (8 of 4 lanes for 32 bf16 channels, 4 of 8 lanes for fp32, 2 of 16 for fp32 D = 48)."""
    from ms_deform_attn.sweep_queries import queries_per_round

    assert queries_per_round(torch.bfloat16, 16, 32, 132) == 2112
    assert queries_per_round(torch.float16, 16, 32, 132) == 2112
    assert queries_per_round(torch.float32, 16, 32, 132) == 1056
    assert queries_per_round(torch.float32, 8, 48, 100) == 100 * 32 * 2 / 8
