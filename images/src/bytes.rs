//! Sizes as people read them: decimal units, one decimal place, as docker and registries show them.

/// `1.2 MB` for 1 234 567 bytes.
pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(bytes: u64, expected: &str) {
        assert_eq!(human_size(bytes), expected);
    }

    #[test]
    fn sizes() {
        check(0, "0 B");
        check(999, "999 B");
        check(1_500, "1.5 kB");
        check(2_345_678, "2.3 MB");
        check(3_000_000_000, "3.0 GB");
    }
}
