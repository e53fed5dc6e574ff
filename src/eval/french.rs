//! Numbers written the French way for the HTML report: decimal comma, a no-break space before
//! the percent sign and units, and a dash for a figure that cannot be computed. A change that
//! rounds to zero shows `±`, so float noise never reads as a rise or a fall.

/// Formats a decimal: `0.8412` → `0,84`, and `None` → `—`.
pub fn decimal(value: Option<f64>, places: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.places$}").replace('.', ","),
        _ => "—".into(),
    }
}

/// Formats a rate as a percentage: `0.8412` → `84,1 %`, and `None` → `—`.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{}\u{a0}%", decimal(Some(v * 100.0), 1)),
        _ => "—".into(),
    }
}

/// Formats a change of a rate in percentage points with its sign: `-0.031` → `−3,1 pts`.
pub fn points(change: Option<f64>) -> String {
    match change {
        Some(v) if v.is_finite() => format!("{}{}\u{a0}pts", sign(v * 100.0, 1), decimal(Some(v.abs() * 100.0), 1)),
        _ => "—".into(),
    }
}

/// Formats a change of a count with its sign: `2.0` → `+2`.
pub fn count_change(change: Option<f64>) -> String {
    match change {
        Some(v) if v.is_finite() => format!("{}{}", sign(v, 0), v.abs().round()),
        _ => "—".into(),
    }
}

/// Formats a change of a decimal score with its sign: `-0.0312` → `−0,031`.
pub fn signed_decimal(change: Option<f64>, places: usize) -> String {
    match change {
        Some(v) if v.is_finite() => format!("{}{}", sign(v, places), decimal(Some(v.abs()), places)),
        _ => "—".into(),
    }
}

/// Sign of `v` as shown with `places` decimals: `±` when it rounds to zero.
fn sign(v: f64, places: usize) -> &'static str {
    let shown = (v.abs() * 10f64.powi(places as i32)).round();
    if shown == 0.0 {
        "±"
    } else if v > 0.0 {
        "+"
    } else {
        "−"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_numbers() {
        assert_eq!(decimal(Some(0.8412), 2), "0,84");
        assert_eq!(percent(Some(0.8412)), "84,1\u{a0}%");
        assert_eq!(percent(None), "—");
        assert_eq!(points(Some(-0.031)), "−3,1\u{a0}pts");
        assert_eq!(points(Some(0.0)), "±0,0\u{a0}pts");
        assert_eq!(points(Some(-1e-8)), "±0,0\u{a0}pts");
        assert_eq!(count_change(Some(2.0)), "+2");
        assert_eq!(signed_decimal(Some(-0.0312), 3), "−0,031");
        assert_eq!(signed_decimal(Some(-0.0001), 3), "±0,000");
    }
}
