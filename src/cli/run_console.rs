//! The web console of `orchestrator run` (`docs/console.md`): built from
//! the config's `[console]` section when enabled.

use std::sync::Arc;

use crate::config::Config;

/// The web console when `[console] enabled`, with its operator token.
pub(super) fn console(
    cfg: &Config,
    http: &crate::http::HttpState,
) -> Result<Option<Arc<crate::console::Console>>, String> {
    let c = &cfg.console;
    if !c.enabled {
        return Ok(None);
    }
    if cfg.http.addr.trim().eq_ignore_ascii_case("off") {
        tracing::warn!("console.enabled is set but http.addr is off: no console");
        return Ok(None);
    }
    let token = crate::console::load_token(c.token.expose(), &c.token_file)?;
    eprintln!(
        "console enabled ({})",
        if token.is_some() {
            "operators sign in with the operator token"
        } else {
            "read-only: no operator token"
        }
    );
    Ok(Some(crate::console::Console::new(
        crate::console::ConsoleOptions {
            token,
            page_size: c.page_size,
            inbox_scan_max: c.inbox_scan_max,
            sessions_max: c.sessions_max,
        },
        http.clone(),
    )))
}
