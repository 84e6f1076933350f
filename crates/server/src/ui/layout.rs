//! The page shell (skip link, navigation, signed-in user, one-shot message)
//! and small formatting helpers shared by the pages.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use tg_model::Outcome;

use super::session::{Flash, User};

/// The page's place in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Now,
    Review,
    Story,
    Autonomy,
}

/// A full console page.
pub(crate) fn page(
    title: &str,
    nav: Nav,
    user: &User,
    flash: Option<&Flash>,
    body: Markup,
) -> Markup {
    let item = |n: Nav, href: &str, label: &str, key: &str| {
        html! {
            li {
                a href=(href) aria-current=[(n == nav).then_some("page")] data-key=(key) {
                    (label)
                }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · triage-gate" }
                // The session's CSRF token, for forms a script may build.
                meta name="csrf-token" content=(user.csrf());
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "triage-gate" }
                    nav aria-label="Console" {
                        ul {
                            (item(Nav::Now, "/ui/now", "Now", "g n"))
                            (item(Nav::Review, "/ui/review", "Review queue", "g r"))
                            (item(Nav::Autonomy, "/ui/autonomy", "Autonomy", "g a"))
                        }
                    }
                    form.search method="get" action="/ui/runs" role="search" {
                        label for="q" .visually-hidden { "Run or correlation ID" }
                        input id="q" name="q" type="search" placeholder="run_… or correlation ID" maxlength=(super::ID_CHARS_MAX);
                        button type="submit" { "Open story" }
                    }
                    div.who {
                        span { "Signed in as " strong { (user.label()) } }
                        @if user.can_sign_out {
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(user.csrf());
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if let Some(f) = flash {
                        p.flash.flash-ok[f.ok].flash-error[!f.ok] role=(if f.ok { "status" } else { "alert" }) id="flash" {
                            (f.text)
                        }
                    }
                    (body)
                }
                footer {
                    p {
                        "Keyboard: " kbd { "?" } " shortcuts · "
                        span data-nav=(format!("{nav:?}")) { "triage-gate console" }
                    }
                }
                div #help .help hidden role="dialog" aria-labelledby="help-title" {
                    h2 #help-title { "Keyboard shortcuts" }
                    dl {
                        dt { kbd { "g" } " " kbd { "n" } } dd { "Now" }
                        dt { kbd { "g" } " " kbd { "r" } } dd { "Review queue" }
                        dt { kbd { "g" } " " kbd { "a" } } dd { "Autonomy" }
                        dt { kbd { "/" } } dd { "Find a run" }
                        dt { kbd { "j" } " / " kbd { "k" } } dd { "Review: next / previous item" }
                        dt { kbd { "a" } } dd { "Review: approve the selected item" }
                        dt { kbd { "r" } } dd { "Review: type a rejection reason (Enter rejects)" }
                        dt { kbd { "o" } } dd { "Review: open the item's run story" }
                        dt { kbd { "Esc" } } dd { "Close this help" }
                    }
                }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · triage-gate" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body.bare {
                main id="main" { (body) }
            }
        }
    }
}

/// `2m 05s`, `3h 10m`, `4d 2h` (never negative).
pub(crate) fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// A UTC time, to the second, machine-readable too.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// An outcome as a labelled badge (text, not colour alone).
pub(crate) fn outcome(o: Outcome) -> Markup {
    html! { span class={ "badge o-" (o.as_str()) } { (o.as_str()) } }
}

/// The first `n` characters of a hash, with the whole in a title.
pub(crate) fn short_hash(h: &str) -> Markup {
    let short: String = h.chars().take(12).collect();
    html! { code title=(h) { (short) "…" } }
}
