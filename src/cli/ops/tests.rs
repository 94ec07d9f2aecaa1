use super::*;

#[test]
fn rfc3339_formats_known_instants() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339(1_764_104_676_007), "2025-11-25T21:04:36.007Z");
}

#[test]
fn filters_are_checked_with_one_line_errors() {
    assert_eq!(parse_since("24h"), Ok(86_400_000));
    assert!(parse_since("0s").is_err());
    assert!(parse_since("5 parsecs").unwrap_err().starts_with("--since"));
    assert_eq!(parse_status("failed").as_deref(), Ok("failed"));
    assert!(parse_status("broken").is_err());
}
