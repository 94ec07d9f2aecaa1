//! Building HTML by hand: every text and attribute value goes through
//! [`escape`], the one function that makes caller-controlled text (ids,
//! errors, outputs) safe to put in a page; the page frame and the small
//! formatting helpers the pages share.

use std::fmt::Write as _;

/// `s` with `& < > " '` replaced by entities: safe as element text and as
/// a double- or single-quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded as one query value.
pub fn url_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Workflows,
    Inbox,
    Health,
    Other,
}

/// What the frame shows of the viewer.
pub struct Viewer<'a> {
    /// The CSRF token of the signed-in operator; `None` when read-only.
    pub csrf: Option<&'a str>,
    /// Whether an operator token is configured at all.
    pub can_sign_in: bool,
}

/// A whole page: head, navigation, `body`.
pub fn page(title: &str, nav: Nav, viewer: &Viewer<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Narralytica console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body>\
         <header><a class=\"brand\" href=\"/console/workflows\">Narralytica</a><nav>",
        escape(title)
    );
    for (n, href, label) in [
        (Nav::Workflows, "/console/workflows", "Workflows"),
        (Nav::Inbox, "/console/inbox", "Failed inbox"),
        (Nav::Health, "/console/health", "Capacity &amp; health"),
    ] {
        let cls = if n == nav { " class=\"on\"" } else { "" };
        let _ = write!(out, "<a{cls} href=\"{href}\">{label}</a>");
    }
    out.push_str("</nav><div class=\"who\">");
    match viewer.csrf {
        Some(csrf) => {
            let _ = write!(
                out,
                "operator <form method=\"post\" action=\"/console/logout\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                escape(csrf)
            );
        }
        None if viewer.can_sign_in => {
            out.push_str("read-only · <a href=\"/console/login\">Sign in</a>");
        }
        None => out.push_str("read-only"),
    }
    let _ = write!(
        out,
        "</div></header><main>{body}</main>\
         <script src=\"/console/assets/console.js\"></script></body></html>"
    );
    out
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> String {
    let s = escape(status);
    format!("<span class=\"badge s-{s}\">{s}</span>")
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS` (UTC); `-` for none.
pub fn time(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// A span of ms as `850ms`, `12.3s`, `4m05s`, `2h07m`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (what a `datetime-local` input sends),
/// read as UTC, into unix ms.
pub fn parse_datetime(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, clock) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm) = (c.next()??, c.next()??);
    let ss = c.next().map_or(Some(0), |v| v)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

// Days since 1970-01-01 from a proleptic Gregorian date and back, after
// Howard Hinnant's public-domain `days_from_civil` algorithms (re-derived).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// JSON pretty-printed and escaped, for a `<pre>`.
pub fn json_block(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    format!("<pre class=\"json\">{}</pre>", escape(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_in_text_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain-id_42"), "plain-id_42");
        // Multi-byte text passes through untouched.
        assert_eq!(escape("vidéo ✓"), "vidéo ✓");
    }

    #[test]
    fn url_values_round_trip_through_the_form_decoder() {
        let v = "a b&c=d/é";
        let q = format!("id={}", url_value(v));
        let back: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(back, vec![("id".to_string(), v.to_string())]);
    }

    #[test]
    fn times_print_in_utc_and_parse_back() {
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(time(Some(1_780_000_000_000)), "2026-05-28 20:26:40");
        assert_eq!(time(None), "-");
        assert_eq!(
            parse_datetime("2026-05-28T20:26:40"),
            Some(1_780_000_000_000)
        );
        assert_eq!(parse_datetime("2024-02-29T00:00"), Some(1_709_164_800_000));
        assert_eq!(parse_datetime("2024-13-01T00:00"), None);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_340), "12.3s");
        assert_eq!(duration(245_000), "4m05s");
        assert_eq!(duration(7_620_000), "2h07m");
    }
}
