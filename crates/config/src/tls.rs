//! `tls`: the certificate authorities outbound HTTPS trusts besides the
//! bundled public roots. One shape, [`TlsTrust`], at the top level (every
//! outbound client) and on each target that may differ (`actions.servicenow`,
//! `actions.pagerduty`, `actions.bridge`, the classifier's provider sections,
//! each HTTP audit sink, `identity.inbound`). A target's own `ca_file`
//! replaces the top-level one for that target. Validation here is pure; the
//! files are read when the pipeline is built (`tg_identity::trust`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `tls` (top level or on a target).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsTrust {
    /// A PEM bundle of one or more CA certificates, trusted in addition to
    /// the bundled roots. Read at start-up; a change needs a restart.
    pub ca_file: Option<PathBuf>,
}

impl TlsTrust {
    /// Nothing set (then it is left out of the serialized configuration, so
    /// the configuration's hash of a file without `tls` does not change).
    pub fn is_unset(&self) -> bool {
        self.ca_file.is_none()
    }

    /// This target's own CA file, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}
