//! The CLI's own error codes: one enum, each code's stable string, exit status and meaning (README lists them all).
//!
//! Scripts match on these strings, so a code's string never changes once
//! released; a new failure gets a new variant. Codes that lower layers decide
//! (a policy's `error_code()`, a node or network error's `code()`, a refusal
//! a running node sends back) are not here: they pass through unchanged with
//! [`crate::failure::Failure::from_layer`], and README lists them apart.

/// Declares [`Code`], [`Code::ALL`] and [`Code::as_str`] from one list, so
/// no code can be missing from any of them (README's check reads `ALL`).
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal,)*) => {
        /// Every error code the `witmed` command line itself emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in README's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable string scripts match on (`error[read_failed]: ...`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    /// A file could not be opened or read, or is not UTF-8 text.
    ReadFailed = "read_failed",
    /// A file is over the size limit of its kind: probably the wrong file.
    TooLarge = "too_large",
    /// An output file could not be written (outputs are never overwritten).
    WriteFailed = "write_failed",
    /// An output file already exists.
    Exists = "exists",
    /// A key file is unreadable, malformed or of another role.
    BadKey = "bad_key",
    /// A public key given in hex does not parse.
    BadPublicKey = "bad_public_key",
    /// `keygen --role` names no role.
    BadRole = "bad_role",
    /// Neither a key nor a key file was given where one is needed.
    MissingKey = "missing_key",
    /// A revocation was signed with a key other than the one that granted the token.
    WrongPatientKey = "wrong_patient_key",
    /// A query file does not parse or validate.
    BadQuery = "bad_query",
    /// A policy TOML file does not parse.
    BadPolicy = "bad_policy",
    /// A consent token file does not hold a token.
    BadToken = "bad_token",
    /// A consortium directory does not parse, names members no one can dial, or has no serial left.
    BadDirectory = "bad_directory",
    /// A patient pseudonym does not parse.
    BadPseudonym = "bad_pseudonym",
    /// A libp2p address does not parse.
    BadAddress = "bad_address",
    /// A node's `node.toml` does not parse.
    BadConfig = "bad_config",
    /// `consent grant --categories` names an unknown data category.
    BadCategory = "bad_category",
    /// `consent grant --modes` names an unknown privacy mode.
    BadMode = "bad_mode",
    /// A patient's audit view could not be made (the node has signed no head).
    AuditViewFailed = "audit_view_failed",
    /// The node's directory or store could not be opened.
    NodeOpenFailed = "node_open_failed",
    /// Reading or writing the node's store failed.
    StoreFailed = "store_failed",
    /// `node init` could not create the node.
    InitFailed = "init_failed",
    /// The node could not install a verified consortium directory.
    InstallFailed = "install_failed",
    /// The running node's admin socket could not be reached.
    AdminChannelFailed = "admin_channel_failed",
    /// The node answered the admin channel with something not asked for (or an unreadable code).
    AdminError = "admin_error",
    /// An import path holds no files of the source's format.
    ImportSourceEmpty = "import_source_empty",
    /// An import path cannot be listed.
    ImportSourceUnreadable = "import_source_unreadable",
    /// An import failed as a whole.
    ImportFailed = "import_failed",
    /// An import loaded everything but some named files (exit status 3).
    ImportIncomplete = "import_incomplete",
    /// The node refused a signed policy.
    PolicyRefused = "policy_refused",
    /// The node refused some of the consent files submitted (each named with its own code).
    SubmitRefused = "submit_refused",
    /// The consortium directory is signed by another authority than the one the node pinned.
    AuthorityMismatch = "authority_mismatch",
    /// A first consortium install needs `--authority` to pin.
    MissingAuthority = "missing_authority",
    /// The libp2p network could not be used.
    NetworkFailed = "network_failed",
    /// `node run --http` names an address beyond this machine without --tls-cert and --tls-key.
    HttpNotLocal = "http_not_local",
    /// The certificate or key given to `node run --tls-cert/--tls-key` could not be used.
    TlsConfig = "tls_config",
    /// The HTTP API could not listen on its address, or its staff token could not be made.
    HttpFailed = "http_failed",
    /// No hospital answered a federated query.
    NoAnswers = "no_answers",
    /// The hospitals' answers could not be combined.
    CombineFailed = "combine_failed",
    /// An encrypted query names an aggregator that is not a member.
    UnknownAggregator = "unknown_aggregator",
    /// An encrypted query was run without `--study`.
    MissingStudy = "missing_study",
    /// Some members did not install a published study key.
    PublishIncomplete = "publish_incomplete",
    /// A key pair could not be generated or saved.
    KeygenFailed = "keygen_failed",
    /// The operating system's random source failed.
    RandomFailed = "random_failed",
    /// The async runtime could not start.
    RuntimeFailed = "runtime_failed",
    /// Writing to stdout failed for a reason other than a closed pipe.
    OutputFailed = "output_failed",
}

impl Code {
    /// The process exit status: 3 for an import that loaded all but some
    /// named files (the rest is usable), 1 for everything else. (2 is clap's,
    /// for a command line it cannot parse.)
    pub fn exit_status(self) -> u8 {
        match self {
            Code::ImportIncomplete => 3,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_strings_are_unique_and_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} is the string of two codes");
            let snake = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && !s.starts_with('_')
                && !s.ends_with('_')
                && !s.contains("__");
            assert!(snake, "{s} is not snake_case");
        }
    }

    #[test]
    fn only_a_partial_import_exits_with_3() {
        for &code in Code::ALL {
            let expected = if code == Code::ImportIncomplete { 3 } else { 1 };
            assert_eq!(code.exit_status(), expected, "{code}");
        }
    }
}
