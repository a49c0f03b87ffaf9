//! Human-written durations ("30s", "5m") and sizes ("64KiB", "1MiB").

use std::time::Duration;

/// Parses "250ms", "30s", "5m", "2h" (a whole number and one unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
}

/// Parses "512B", "64KiB", "1MiB", "2GiB"; also accepts the decimal "KB", "MB", "GB".
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text)?;
    let bytes_per_unit: u64 = match unit {
        "B" | "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(bytes_per_unit)
}

/// Parses a rate, "20/s", "100/m" or "5/h": a whole number per second,
/// minute or hour; with `sizes`, the number may carry a size unit ("1MiB/s").
pub fn parse_rate(text: &str, sizes: bool) -> Option<(u64, Duration)> {
    let (amount, period) = text.split_once('/')?;
    let amount = if sizes {
        parse_size(amount)?
    } else {
        amount.trim().parse().ok()?
    };
    let per = match period.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((amount, per))
}

fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return None;
    }
    let number = text[..digits_end].parse().ok()?;
    Some((number, text[digits_end..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "s", "30", "30x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("20/s", false),
            Some((20, Duration::from_secs(1)))
        );
        assert_eq!(
            parse_rate("100/m", false),
            Some((100, Duration::from_secs(60)))
        );
        assert_eq!(
            parse_rate("1MiB/s", true),
            Some((1 << 20, Duration::from_secs(1)))
        );
        for bad in ["", "20", "20/d", "/s", "1MiB/s", "-1/s", "1.5/s"] {
            assert_eq!(parse_rate(bad, false), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("1MiB"), Some(1_048_576));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        for bad in ["", "KiB", "1kib", "1.5MiB", "1TiB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
