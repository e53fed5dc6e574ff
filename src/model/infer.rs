//! Inference-only forward pass of the transformer layers, on plain `f32` buffers.
//!
//! [`super::bert::Layer::forward`] runs on candle tensors, and it stays the reference and the
//! training path. This module computes the same function for [`super::bert::Bert::forward`]
//! with less overhead:
//! - sequences are packed one after another, `[tokens, hidden]`, with no padding: only attention
//!   needs to know where a sequence ends, so padded rows cost nothing;
//! - weight matrices are stored in panels of 16 columns, and products call `gemm`
//!   single-threaded on parts of the work that this module hands to rayon itself. A small
//!   input (one short message) is split by weight columns, so each core reads only its half of
//!   the weights. A large input is split by token rows;
//! - biases and GELU run inside the part that computed their columns. Residual plus layer
//!   norm, softmax and GELU are plain loops, compiled for AVX2 when the CPU has it;
//! - attention runs one task per (sequence, head);
//! - the activation buffers are allocated once per forward pass and reused by every layer.
//!
//! The weights live here, in [`PackedLayer`]s, in a layout made for this path ([`Panels`]);
//! [`super::bert::Bert`] rebuilds candle layers from them only when training code asks.

use std::ops::Range;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::bert::{BertConfig, Layer};

/// Width of a weight panel: the `gemm` f32 AVX2 kernel computes 16 output columns at a time.
const PANEL: usize = 16;

/// Inputs with fewer token rows than this, times the number of threads, split each weight
/// product by columns; larger ones split it by rows.
///
/// With few rows a product reads each weight once for little arithmetic, so its speed is
/// bounded by memory traffic: splitting by columns halves what each core reads. With many rows
/// the arithmetic dominates and splitting by rows keeps each part a large, efficient product.
const COLUMN_SPLIT_MAX_ROWS_PER_THREAD: usize = 48;

/// A weight matrix `[rows = in, cols = out]` stored as panels of [`PANEL`] columns: panel `p`
/// holds columns `16p..16p + 16` of every row, row after row, in one contiguous block.
///
/// A product with few token rows then reads the weights in one sequential stream. In the
/// row-major `[in, out]` layout the kernel loads 64 bytes from each row in turn, a new page at
/// every load. Measured on one core of the 2-core benchmark machine with 26 rows, that layout
/// ran at 34 GFLOP/s and this one at 64.
pub struct Panels {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Panels {
    /// Packs a row-major `[rows, cols]` matrix.
    pub fn from_row_major(matrix: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(matrix.len(), rows * cols, "matrix size");
        let mut data = Vec::with_capacity(rows * cols);
        for start in (0..cols).step_by(PANEL) {
            let end = (start + PANEL).min(cols);
            for row in matrix.chunks_exact(cols) {
                data.extend_from_slice(&row[start..end]);
            }
        }
        Panels { data, rows, cols }
    }

    /// Unpacks the row-major `[rows, cols]` matrix.
    pub fn to_row_major(&self) -> Vec<f32> {
        let mut matrix = vec![0f32; self.rows * self.cols];
        for (start, panel) in self.panels() {
            let width = panel.len() / self.rows;
            for (row, values) in matrix.chunks_exact_mut(self.cols).zip(panel.chunks_exact(width)) {
                row[start..start + width].copy_from_slice(values);
            }
        }
        matrix
    }

    /// `(first column, panel data)` of every panel.
    fn panels(&self) -> impl Iterator<Item = (usize, &[f32])> {
        (0..self.cols).step_by(PANEL).map(|start| {
            let width = PANEL.min(self.cols - start);
            (start, &self.data[start * self.rows..(start + width) * self.rows])
        })
    }
}

/// The weights of one transformer layer, in the layout of this module.
pub struct PackedLayer {
    qkv: Panels,
    qkv_bias: Vec<f32>,
    out: Panels,
    out_bias: Vec<f32>,
    norm1: (Vec<f32>, Vec<f32>),
    up: Panels,
    up_bias: Vec<f32>,
    down: Panels,
    down_bias: Vec<f32>,
    norm2: (Vec<f32>, Vec<f32>),
}

impl PackedLayer {
    /// Copies the tensors of a candle layer (matrices `[in, out]`).
    pub fn from_layer(layer: &Layer, config: &BertConfig) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let vector = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let matrix = |t: &Tensor, rows: usize, cols: usize| -> Result<Panels> {
            if t.dims() != [rows, cols] {
                bail!("layer matrix has shape {:?}, expected [{rows}, {cols}]", t.dims());
            }
            Ok(Panels::from_row_major(&vector(t)?, rows, cols))
        };
        Ok(PackedLayer {
            qkv: matrix(&layer.qkv_weight, h, 3 * h)?,
            qkv_bias: vector(&layer.qkv_bias)?,
            out: matrix(&layer.attention_out_weight, h, h)?,
            out_bias: vector(&layer.attention_out_bias)?,
            norm1: (vector(&layer.attention_norm.weight)?, vector(&layer.attention_norm.bias)?),
            up: matrix(&layer.intermediate_weight, h, i)?,
            up_bias: vector(&layer.intermediate_bias)?,
            down: matrix(&layer.output_weight, i, h)?,
            down_bias: vector(&layer.output_bias)?,
            norm2: (vector(&layer.output_norm.weight)?, vector(&layer.output_norm.bias)?),
        })
    }

    /// Rebuilds the candle layer, for training and the candle forward pass.
    pub fn to_layer(&self, eps: f64, device: &Device) -> Result<Layer> {
        let vector = |v: &[f32]| Tensor::from_slice(v, v.len(), device);
        let matrix = |p: &Panels| Tensor::from_vec(p.to_row_major(), (p.rows, p.cols), device);
        let tensors = [
            matrix(&self.qkv)?,
            vector(&self.qkv_bias)?,
            matrix(&self.out)?,
            vector(&self.out_bias)?,
            vector(&self.norm1.0)?,
            vector(&self.norm1.1)?,
            matrix(&self.up)?,
            vector(&self.up_bias)?,
            matrix(&self.down)?,
            vector(&self.down_bias)?,
            vector(&self.norm2.0)?,
            vector(&self.norm2.1)?,
        ];
        Layer::from_tensors(&tensors, eps)
    }
}

/// Runs `layers` on packed hidden states `x` (`[sum of lengths, hidden]`, sequence after
/// sequence) in place.
pub fn run_layers(layers: &[PackedLayer], config: &BertConfig, x: &mut [f32], lengths: &[usize]) -> Result<()> {
    run_layers_tapped(layers, config, x, lengths, |_, _| {})
}

/// Runs `layers` as [`run_layers`] does and hands the hidden states after each layer to `tap`,
/// with the number of layers run so far (1 after the first layer).
pub fn run_layers_tapped(
    layers: &[PackedLayer],
    config: &BertConfig,
    x: &mut [f32],
    lengths: &[usize],
    mut tap: impl FnMut(usize, &[f32]) + Send,
) -> Result<()> {
    let h = config.hidden_size;
    let tokens: usize = lengths.iter().sum();
    if x.len() != tokens * h {
        bail!("hidden states hold {} values, expected {tokens} tokens × {h}", x.len());
    }
    if tokens == 0 || layers.is_empty() {
        return Ok(());
    }
    // Run on a rayon thread, so that the parallel parts below hand work to a spinning pool
    // thread instead of waking the pool and blocking the caller for every product.
    rayon::scope(|_| {
        let mut buffers = Buffers::new(tokens, config);
        for (done, layer) in layers.iter().enumerate() {
            layer_forward(layer, config, x, lengths, &mut buffers);
            tap(done + 1, x);
        }
    });
    Ok(())
}

/// Activations of one layer, reused from layer to layer.
struct Buffers {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    inner: Vec<f32>,
}

impl Buffers {
    fn new(tokens: usize, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        Buffers {
            qkv: vec![0.0; tokens * 3 * h],
            context: vec![0.0; tokens * h],
            attended: vec![0.0; tokens * h],
            inner: vec![0.0; tokens * config.intermediate_size],
        }
    }
}

fn layer_forward(w: &PackedLayer, config: &BertConfig, x: &mut [f32], lengths: &[usize], buffers: &mut Buffers) {
    let h = config.hidden_size;
    let eps = config.layer_norm_eps as f32;
    let Buffers { qkv, context, attended, inner } = buffers;

    linear(x, &w.qkv, &w.qkv_bias, qkv, false);
    attention(qkv, lengths, config, context);
    linear(context, &w.out, &w.out_bias, attended, false);
    // attended = norm(attended + x)
    add_norm(attended, x, h, &w.norm1.0, &w.norm1.1, eps);
    linear(attended, &w.up, &w.up_bias, inner, true);
    linear(inner, &w.down, &w.down_bias, x, false);
    // x = norm(x + attended)
    add_norm(x, attended, h, &w.norm2.0, &w.norm2.1, eps);
}

/// Raw pointer that rayon tasks may share; each task writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used to write disjoint regions from different threads, and the buffer outlives
// the parallel call that uses it.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer; a method, so that closures capture the whole (Send) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Splits `0..total` into at most `parts` ranges whose boundaries are multiples of `align`.
fn split(total: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let step = total.div_ceil(parts).div_ceil(align) * align;
    (0..total).step_by(step.max(1)).map(|start| start..(start + step).min(total)).collect()
}

/// `out[m, n] = x[m, k] · w[k, n] + bias`, then GELU if `gelu`; `x` and `out` row-major.
fn linear(x: &[f32], w: &Panels, bias: &[f32], out: &mut [f32], gelu: bool) {
    let (k, n) = (w.rows, w.cols);
    let m = x.len() / k;
    assert_eq!(x.len(), m * k, "linear: input size");
    assert_eq!(bias.len(), n, "linear: bias size");
    assert_eq!(out.len(), m * n, "linear: output size");
    let threads = rayon::current_num_threads();
    let dst = SharedMut(out.as_mut_ptr());
    // SAFETY (all branches): every part writes its own rows or columns of `out`, whose size is
    // checked above, and the calls return before `out` is released.
    if threads > 1 && m < COLUMN_SPLIT_MAX_ROWS_PER_THREAD * threads {
        let parts = split(n, threads, PANEL);
        parts.into_par_iter().for_each(|cols| unsafe { linear_part(x, 0..m, w, cols, bias, dst, gelu) });
    } else if threads > 1 {
        let parts = split(m, threads, 1);
        parts.into_par_iter().for_each(|rows| unsafe { linear_part(x, rows, w, 0..n, bias, dst, gelu) });
    } else {
        unsafe { linear_part(x, 0..m, w, 0..n, bias, dst, gelu) }
    }
}

/// Rows `rows` and columns `cols` (a whole number of panels) of [`linear`], on the calling
/// thread.
///
/// # Safety
/// `out` must point to an `m × n` buffer (`m` at least `rows.end`) that no other thread reads
/// or writes in this block.
unsafe fn linear_part(x: &[f32], rows: Range<usize>, w: &Panels, cols: Range<usize>, bias: &[f32], out: SharedMut, gelu: bool) {
    let (k, n) = (w.rows, w.cols);
    let width = cols.len();
    if rows.is_empty() || width == 0 {
        return;
    }
    for r in rows.clone() {
        let row = std::slice::from_raw_parts_mut(out.get().add(r * n + cols.start), width);
        row.copy_from_slice(&bias[cols.clone()]);
    }
    for (start, panel) in w.panels().filter(|(start, _)| cols.contains(start)) {
        let panel_width = panel.len() / k;
        // out = 1 · out + 1 · x · panel over the block; gemm takes (column, row) strides.
        gemm(
            rows.len(),
            panel_width,
            k,
            out.get().add(rows.start * n + start),
            1,
            n as isize,
            true,
            x.as_ptr().add(rows.start * k),
            1,
            k as isize,
            panel.as_ptr(),
            1,
            panel_width as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    if gelu {
        if width == n {
            kernels::gelu(std::slice::from_raw_parts_mut(out.get().add(rows.start * n), rows.len() * n));
        } else {
            for r in rows {
                kernels::gelu(std::slice::from_raw_parts_mut(out.get().add(r * n + cols.start), width));
            }
        }
    }
}

/// `out[r] = layer_norm(out[r] + residual[r])` for every row of width `h`, rows split over the
/// threads.
fn add_norm(out: &mut [f32], residual: &[f32], h: usize, weight: &[f32], bias: &[f32], eps: f32) {
    let rows = out.len() / h;
    let per_part = rows.div_ceil(rayon::current_num_threads()).max(1) * h;
    out.par_chunks_mut(per_part).zip(residual.par_chunks(per_part)).for_each(|(out, residual)| {
        for (row, res) in out.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
            kernels::add_norm(row, Some(res), weight, bias, eps);
        }
    });
}

/// Layer norm of every row of width `h` of `x`, in place.
pub fn norm_rows(x: &mut [f32], h: usize, weight: &[f32], bias: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(h) {
        kernels::add_norm(row, None, weight, bias, eps);
    }
}

/// Multi-head self-attention of packed sequences: `qkv` is `[tokens, 3 · hidden]` (queries,
/// keys, values), `context` receives `[tokens, hidden]`.
fn attention(qkv: &[f32], lengths: &[usize], config: &BertConfig, context: &mut [f32]) {
    let h = config.hidden_size;
    let heads = config.num_attention_heads;
    let d = config.head_dim();
    let scale = 1.0 / (d as f32).sqrt();
    let mut tasks = Vec::with_capacity(lengths.len() * heads);
    let mut start = 0;
    for &len in lengths {
        tasks.extend((0..heads).map(|head| (start, len, head)));
        start += len;
    }
    debug_assert!(qkv.len() == start * 3 * h && context.len() == start * h);
    let out = SharedMut(context.as_mut_ptr());
    let row = 3 * h as isize;
    tasks.into_par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, (start, len, head)| {
        scores.clear();
        scores.resize(len * len, 0.0);
        // SAFETY: each task reads rows start..start + len of `qkv` and writes columns
        // head·d..(head + 1)·d of the same rows of `context`, which no other task writes.
        unsafe {
            let q = qkv.as_ptr().add(start * 3 * h + head * d);
            let k = q.add(h);
            let v = q.add(2 * h);
            // scores[i, j] = scale · q_i · k_j: rhs is kᵀ, element (c, j) at k + j·row + c.
            gemm(len, len, d, scores.as_mut_ptr(), 1, len as isize, false, q, 1, row, k, row, 1, 0.0, scale, false, false, false, Parallelism::None);
            for probabilities in scores.chunks_exact_mut(len) {
                kernels::softmax(probabilities);
            }
            // context_i = Σ_j scores[i, j] · v_j
            let dst = out.get().add(start * h + head * d);
            gemm(len, d, len, dst, 1, h as isize, false, scores.as_ptr(), 1, len as isize, v, 1, row, 0.0, 1.0, false, false, false, Parallelism::None);
        }
    });
}

/// Elementwise kernels. Each is written once as plain loops that LLVM vectorises, and compiled
/// twice: for the baseline target and, chosen at run time, for AVX2 with FMA.
pub mod kernels {
    /// `x ← gelu(x) = x/2 · (1 + erf(x / √2))`.
    pub fn gelu(x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { gelu_avx2(x) };
        }
        gelu_portable(x)
    }

    /// `x ← softmax(x)`.
    pub fn softmax(x: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { softmax_avx2(x) };
        }
        softmax_portable(x)
    }

    /// `x ← layer_norm(x + residual) · weight + bias`.
    pub fn add_norm(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { add_norm_avx2(x, residual, weight, bias, eps) };
        }
        add_norm_portable(x, residual, weight, bias, eps)
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu_avx2(x: &mut [f32]) {
        gelu_portable(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_avx2(x: &mut [f32]) {
        softmax_portable(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_norm_avx2(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
        add_norm_portable(x, residual, weight, bias, eps)
    }

    #[inline(always)]
    fn gelu_portable(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_one(*v);
        }
    }

    #[inline(always)]
    fn softmax_portable(x: &mut [f32]) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let mut sum = 0.0;
        for v in x.iter_mut() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inverse = 1.0 / sum;
        for v in x.iter_mut() {
            *v *= inverse;
        }
    }

    #[inline(always)]
    fn add_norm_portable(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
        let n = x.len();
        if let Some(residual) = residual {
            for (v, r) in x.iter_mut().zip(&residual[..n]) {
                *v += r;
            }
        }
        let mean = sum8(x, |v| v) / n as f32;
        let variance = sum8(x, |v| (v - mean) * (v - mean)) / n as f32;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((v, w), b) in x.iter_mut().zip(&weight[..n]).zip(&bias[..n]) {
            *v = (*v - mean) * inverse * w + b;
        }
    }

    /// Sum of `f(v)` over `x` in eight interleaved partial sums, which LLVM keeps in one vector
    /// register (a single running sum would have to be added in order, one lane at a time).
    #[inline(always)]
    fn sum8(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut partial = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (p, &v) in partial.iter_mut().zip(chunk) {
                *p += f(v);
            }
        }
        partial.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
    }

    /// `x/2 · (1 + erf(x / √2))`, with erf from Abramowitz and Stegun 7.1.26 (absolute error
    /// under 1.5e-7) and [`exp`]. Branch-free, so that a loop over it vectorises.
    #[inline(always)]
    pub fn gelu_one(x: f32) -> f32 {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
        let z = x * std::f32::consts::FRAC_1_SQRT_2;
        let a = z.abs();
        let t = 1.0 / (1.0 + P * a);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        // erfc(|z|) = poly · e^(−z²); erf(z) = sign(z) · (1 − erfc(|z|)).
        let erfc = poly * exp(-a * a);
        let one_plus_erf = if z >= 0.0 { 2.0 - erfc } else { erfc };
        0.5 * x * one_plus_erf
    }

    /// Computes `e^x` for `f32` with a relative error of about 2e-7 where the result is a normal
    /// number. Below about −87 it returns a tiny positive number instead of a subnormal.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        // Adding 1.5 · 2^23 rounds to an integer, which then sits in the low mantissa bits.
        const ROUND: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let x = if x < -87.0 { -87.0 } else { x };
        let x = if x > 88.0 { 88.0 } else { x };
        let shifted = x * std::f32::consts::LOG2_E + ROUND;
        let n = shifted - ROUND;
        let r = x - n * LN2_HI - n * LN2_LO;
        // Taylor series of e^r to degree 6 for |r| ≤ ln 2 / 2: truncation error under 1.3e-7.
        let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        let exponent = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
        p * f32::from_bits(exponent)
    }
}

#[cfg(test)]
mod tests {
    use super::kernels;
    use candle_core::{Device, Tensor};

    #[test]
    fn exp_is_accurate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let expected = (x as f64).exp();
            let error = ((kernels::exp(x) as f64 - expected) / expected).abs();
            assert!(error < 5e-7, "exp({x}): relative error {error}");
        }
    }

    #[test]
    fn gelu_matches_candle() {
        let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 / 1000.0).collect();
        let reference: Vec<f32> = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap().gelu_erf().unwrap().to_vec1().unwrap();
        let mut ours = xs.clone();
        kernels::gelu(&mut ours);
        for ((x, a), b) in xs.iter().zip(&ours).zip(&reference) {
            assert!((a - b).abs() <= 1e-6 * x.abs().max(1.0), "gelu({x}) = {a}, candle gives {b}");
        }
    }

    #[test]
    fn panels_round_trip_with_a_partial_last_panel() {
        let (rows, cols) = (3, 2 * super::PANEL + 5);
        let matrix: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let panels = super::Panels::from_row_major(&matrix, rows, cols);
        // The first panel contains columns 0..16 of row 0, then those of row 1.
        let first_row: Vec<f32> = (0..super::PANEL).map(|v| v as f32).collect();
        assert_eq!(panels.data[..super::PANEL], first_row[..]);
        assert_eq!(panels.data[super::PANEL], cols as f32);
        assert_eq!(panels.to_row_major(), matrix);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0f32, 2.0, -3.0, 0.5, 10.0, -100.0, 3.0, 3.0, 7.25];
        let expected: Vec<f64> = {
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - 10.0).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        };
        kernels::softmax(&mut x);
        for (a, b) in x.iter().zip(&expected) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} against {b}");
        }
    }
}

