//! Number formatting: fixed decimals with grouped thousands, significant digits, parameter lists.
//!
//! Apart because the page and the charts format numbers the same way.

/// Fixed decimals with thousands grouped by a narrow no-break space; "n/a" when not finite; no "-0".
pub(super) fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_at(s.find('.').unwrap_or(s.len()));
    let mut out = String::with_capacity(s.len() + 8);
    if v < 0.0 && s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        out.push('-');
    }
    let n = int.len();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (n - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    out.push_str(frac);
    out
}

pub(super) fn fmt_count(n: usize) -> String {
    fmt_num(n as f64, 0)
}

/// At most `sig` significant digits, trailing zeros dropped (so 0.30000000000000004 shows as 0.3).
pub(super) fn fmt_sig(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-6..16).contains(&mag) {
        return format!("{:.*e}", (sig - 1).clamp(0, 16) as usize, v);
    }
    let decimals = (sig - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    if s == "-0" {
        "0".to_owned()
    } else {
        s
    }
}

pub(super) fn params_text(names: &[String], params: &[f64]) -> String {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("param {}", i + 1));
            format!("{} = {}", name, fmt_sig(*v, 10))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_drop_negative_zero_and_float_noise() {
        assert_eq!(fmt_num(-0.001, 2), "0.00");
        assert_eq!(fmt_sig(0.1 + 0.2, 10), "0.3");
    }
}
