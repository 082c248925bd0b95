// IEEE-754 binary32 arithmetic on bit patterns (u32), in integer operations only: add, sub,
// mul and div rounded to nearest-even with subnormals, as a CPU (and Rust) computes them.
// The weight encoders (quantize.wgsl) use it so that the GPU's q4/q8/f16 bytes equal the CPU
// encoder's bit for bit: WGSL lets a GPU flush subnormals, fuse a multiply into an add and
// divide with 2.5 ulp of error, any of which would change a rounding somewhere.
// NaN results are the quiet NaN 0x7fc00000 (the encoders refuse NaN input before using these).
// Modelled on the structure of Berkeley SoftFloat's f32 routines (round-and-pack with a
// sticky bit); written for WGSL's 32-bit integers.

const SF_SIGN: u32 = 0x80000000u;
const SF_NAN: u32 = 0x7fc00000u;
const SF_INF: u32 = 0x7f800000u;

fn sf_exp(a: u32) -> u32 {
    return (a >> 23u) & 0xffu;
}

fn sf_is_finite(a: u32) -> bool {
    return sf_exp(a) != 0xffu;
}

fn sf_is_nan(a: u32) -> bool {
    return sf_exp(a) == 0xffu && (a & 0x7fffffu) != 0u;
}

fn sf_is_zero(a: u32) -> bool {
    return (a & 0x7fffffffu) == 0u;
}

fn sf_abs(a: u32) -> u32 {
    return a & 0x7fffffffu;
}

fn sf_neg(a: u32) -> u32 {
    return a ^ SF_SIGN;
}

// `a >> dist`, with any 1 bit shifted out ORed into bit 0 ("jamming": remembers inexactness).
fn sf_shr_jam(a: u32, dist: u32) -> u32 {
    if (dist == 0u) {
        return a;
    }
    if (dist < 32u) {
        return (a >> dist) | select(0u, 1u, (a << (32u - dist)) != 0u);
    }
    return select(0u, 1u, a != 0u);
}

// The float `sig * 2^(exp - 156)`, rounded to nearest-even: `sig` has its leading 1 at bit 30
// (or is smaller when `exp` is 0 or below), bits 6..0 are below the result's last bit.
// `exp` is the result's biased exponent minus one (the leading bit adds the one when packed).
fn sf_round_pack(sign: u32, exp_in: i32, sig_in: u32) -> u32 {
    var exp = exp_in;
    var sig = sig_in;
    if (exp < 0) {
        sig = sf_shr_jam(sig, u32(-exp));
        exp = 0;
    } else if (exp > 0xfd || (exp == 0xfd && sig + 0x40u >= 0x80000000u)) {
        return sign | SF_INF;
    }
    let round_bits = sig & 0x7fu;
    sig = (sig + 0x40u) >> 7u;
    if (round_bits == 0x40u) {
        sig = sig & ~1u;
    }
    if (sig == 0u) {
        exp = 0;
    }
    return sign | ((u32(exp) << 23u) + sig);
}

// Significand with its implicit bit (24 bits, bit 23 set) and unbiased-by-150 exponent of a
// finite non-zero `a`: `a = sig * 2^(e - 150)`. Subnormals are normalised.
struct SfParts {
    sig: u32,
    e: i32,
}

fn sf_parts(a: u32) -> SfParts {
    let e = i32(sf_exp(a));
    let m = a & 0x7fffffu;
    if (e == 0) {
        let s = countLeadingZeros(m) - 8u;
        return SfParts(m << s, 1 - i32(s));
    }
    return SfParts(m | 0x800000u, e);
}

fn sf_add(a: u32, b: u32) -> u32 {
    if (sf_is_nan(a) || sf_is_nan(b)) {
        return SF_NAN;
    }
    if (!sf_is_finite(a)) {
        if (!sf_is_finite(b) && ((a ^ b) & SF_SIGN) != 0u) {
            return SF_NAN;
        }
        return a;
    }
    if (!sf_is_finite(b)) {
        return b;
    }
    if (sf_is_zero(a)) {
        if (sf_is_zero(b)) {
            return a & b; // -0 only for -0 + -0
        }
        return b;
    }
    if (sf_is_zero(b)) {
        return a;
    }
    // |x| >= |y|.
    var x = a;
    var y = b;
    if (sf_abs(b) > sf_abs(a)) {
        x = b;
        y = a;
    }
    let sign = x & SF_SIGN;
    // Exponents as stored (1 for subnormals), significands without normalising, 6 guard bits.
    let ex = max(i32(sf_exp(x)), 1);
    let ey = max(i32(sf_exp(y)), 1);
    let mx = (select(0u, 0x800000u, sf_exp(x) != 0u) | (x & 0x7fffffu)) << 6u;
    var my = (select(0u, 0x800000u, sf_exp(y) != 0u) | (y & 0x7fffffu)) << 6u;
    my = sf_shr_jam(my, u32(ex - ey));
    var s: u32;
    if (((x ^ y) & SF_SIGN) == 0u) {
        s = mx + my;
    } else {
        s = mx - my;
        if (s == 0u) {
            return 0u;
        }
    }
    // value = s * 2^(ex - 156); move the leading 1 to bit 30.
    let shift = i32(countLeadingZeros(s)) - 1;
    return sf_round_pack(sign, ex - shift, s << u32(shift));
}

fn sf_sub(a: u32, b: u32) -> u32 {
    return sf_add(a, sf_neg(b));
}

fn sf_mul(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & SF_SIGN;
    if (sf_is_nan(a) || sf_is_nan(b)) {
        return SF_NAN;
    }
    if (!sf_is_finite(a) || !sf_is_finite(b)) {
        if (sf_is_zero(a) || sf_is_zero(b)) {
            return SF_NAN;
        }
        return sign | SF_INF;
    }
    if (sf_is_zero(a) || sf_is_zero(b)) {
        return sign;
    }
    let pa = sf_parts(a);
    let pb = sf_parts(b);
    // 24 x 24 -> 48-bit product in (hi, lo), from 16-bit halves.
    let al = pa.sig & 0xffffu;
    let ah = pa.sig >> 16u;
    let bl = pb.sig & 0xffffu;
    let bh = pb.sig >> 16u;
    let ll = al * bl;
    let mid = ah * bl + al * bh;
    let lo = ll + (mid << 16u);
    let carry = select(0u, 1u, lo < ll);
    let hi = ah * bh + (mid >> 16u) + carry;
    // Product in [2^46, 2^48): keep bits 47..17 as a 31-bit sig, the rest jammed.
    var sig = (hi << 15u) | (lo >> 17u) | select(0u, 1u, (lo & 0x1ffffu) != 0u);
    var exp = pa.e + pb.e - 127;
    if (sig < 0x40000000u) {
        exp = exp - 1;
        sig = sig << 1u;
    }
    return sf_round_pack(sign, exp, sig);
}

fn sf_div(a: u32, b: u32) -> u32 {
    let sign = (a ^ b) & SF_SIGN;
    if (sf_is_nan(a) || sf_is_nan(b)) {
        return SF_NAN;
    }
    if (!sf_is_finite(a)) {
        if (!sf_is_finite(b)) {
            return SF_NAN;
        }
        return sign | SF_INF;
    }
    if (!sf_is_finite(b)) {
        return sign;
    }
    if (sf_is_zero(b)) {
        if (sf_is_zero(a)) {
            return SF_NAN;
        }
        return sign | SF_INF;
    }
    if (sf_is_zero(a)) {
        return sign;
    }
    let pa = sf_parts(a);
    let pb = sf_parts(b);
    var r = pa.sig;
    var exp = pa.e - pb.e + 126;
    if (r < pb.sig) {
        exp = exp - 1;
        r = r << 1u;
    }
    // 31 quotient bits of r / sig_b (r in [sig_b, 2 sig_b): the first bit is 1), by long
    // division; the remainder stays below 2^25.
    var q = 0u;
    for (var i = 0u; i < 31u; i = i + 1u) {
        q = q << 1u;
        if (r >= pb.sig) {
            r = r - pb.sig;
            q = q | 1u;
        }
        r = r << 1u;
    }
    return sf_round_pack(sign, exp, q | select(0u, 1u, r != 0u));
}

// Total order for non-NaN values (-0 == +0).
fn sf_ord(a: u32) -> i32 {
    if ((a & SF_SIGN) != 0u) {
        return -i32(a & 0x7fffffffu);
    }
    return i32(a);
}

fn sf_lt(a: u32, b: u32) -> bool {
    return sf_ord(a) < sf_ord(b);
}

fn sf_gt(a: u32, b: u32) -> bool {
    return sf_ord(a) > sf_ord(b);
}

// Rust's `f32::clamp(lo, hi)` for non-NaN values.
fn sf_clamp(a: u32, lo: u32, hi: u32) -> u32 {
    var x = a;
    if (sf_lt(x, lo)) {
        x = lo;
    }
    if (sf_gt(x, hi)) {
        x = hi;
    }
    return x;
}

// Rust's `f32::max` for non-NaN values (the second when they compare equal).
fn sf_max(a: u32, b: u32) -> u32 {
    return select(b, a, sf_gt(a, b));
}

// Rust's `f32::round`: to the nearest integer, halves away from zero.
fn sf_round_away(a: u32) -> u32 {
    let e = i32(sf_exp(a)) - 127;
    let sign = a & SF_SIGN;
    if (e < -1) {
        return sign;
    }
    if (e == -1) {
        return sign | 0x3f800000u;
    }
    if (e >= 23) {
        return a;
    }
    let frac = u32(23 - e);
    let mask = (1u << frac) - 1u;
    return (a + (1u << (frac - 1u))) & ~mask;
}

// An integral float of magnitude below 2^23 as i32 (what Rust's `as` gives for those).
fn sf_to_i32(a: u32) -> i32 {
    let e = i32(sf_exp(a)) - 127;
    if (e < 0) {
        return 0;
    }
    let m = i32(((a & 0x7fffffu) | 0x800000u) >> u32(23 - min(e, 23)));
    return select(m, -m, (a & SF_SIGN) != 0u);
}

// f32 bits -> f16 bits, rounded to nearest-even (as `half::f16::from_f32`); too large -> inf.
fn sf_to_f16(a: u32) -> u32 {
    let sign = (a >> 16u) & 0x8000u;
    let e = sf_exp(a);
    let m = a & 0x7fffffu;
    if (e == 0xffu) {
        return sign | 0x7c00u | select(0u, 0x200u | (m >> 13u), m != 0u);
    }
    if (e > 142u) {
        return sign | 0x7c00u;
    }
    if (e >= 113u) {
        var h = ((e - 112u) << 10u) | (m >> 13u);
        let rb = m & 0x1fffu;
        if (rb > 0x1000u || (rb == 0x1000u && (h & 1u) != 0u)) {
            h = h + 1u;
        }
        return sign | h;
    }
    // Subnormal f16 (or zero): k * 2^-24 with k = M * 2^(e - 126).
    if (e == 0u) {
        return sign;
    }
    let shift = 126u - e;
    if (shift >= 25u) {
        return sign;
    }
    let mm = m | 0x800000u;
    var k = mm >> shift;
    let rem = mm & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (k & 1u) != 0u)) {
        k = k + 1u;
    }
    return sign | k;
}

// f16 bits -> f32 bits (exact).
fn sf_from_f16(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        let s = countLeadingZeros(m) - 21u;
        return sign | ((113u - s) << 23u) | (((m << s) & 0x3ffu) << 13u);
    }
    if (e == 31u) {
        return sign | SF_INF | (m << 13u);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}
