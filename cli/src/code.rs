//! The CLI's own error codes: one enum, each code's stable string, exit status and meaning (README lists them all).
//!
//! Scripts match on these strings, so a code's string never changes once
//! released; a new failure gets a new variant. Codes that lower layers decide
//! (a policy's `error_code()`, a node or network error's `code()`, a refusal
//! a running node sends back) are not here: they pass through unchanged with
//! [`crate::failure::Failure::from_layer`], and README lists them apart.

/// Every error code the `witmed` command line itself emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// A file could not be opened or read, or is not UTF-8 text.
    ReadFailed,
    /// A file is over the size limit of its kind: probably the wrong file.
    TooLarge,
    /// An output file could not be written (outputs are never overwritten).
    WriteFailed,
    /// An output file already exists.
    Exists,
    /// A key file is unreadable, malformed or of another role.
    BadKey,
    /// A public key given in hex does not parse.
    BadPublicKey,
    /// `keygen --role` names no role.
    BadRole,
    /// Neither a key nor a key file was given where one is needed.
    MissingKey,
    /// A revocation was signed with a key other than the one that granted the token.
    WrongPatientKey,
    /// A query file does not parse or validate.
    BadQuery,
    /// A policy TOML file does not parse.
    BadPolicy,
    /// A consent token file does not hold a token.
    BadToken,
    /// A consortium directory does not parse, or names members no one can dial.
    BadDirectory,
    /// A patient pseudonym does not parse.
    BadPseudonym,
    /// A libp2p address does not parse.
    BadAddress,
    /// A node's `node.toml` does not parse.
    BadConfig,
    /// `consent grant --categories` names an unknown data category.
    BadCategory,
    /// `consent grant --modes` names an unknown privacy mode.
    BadMode,
    /// The node's directory or store could not be opened.
    NodeOpenFailed,
    /// Reading or writing the node's store failed.
    StoreFailed,
    /// `node init` could not create the node.
    InitFailed,
    /// The node could not install a verified consortium directory.
    InstallFailed,
    /// The running node's admin socket could not be reached.
    AdminChannelFailed,
    /// The node answered the admin channel with something not asked for (or an unreadable code).
    AdminError,
    /// An import path holds no files of the source's format.
    ImportSourceEmpty,
    /// An import path cannot be listed.
    ImportSourceUnreadable,
    /// An import failed as a whole.
    ImportFailed,
    /// An import loaded everything but some named files (exit status 3).
    ImportIncomplete,
    /// The node refused a signed policy.
    PolicyRefused,
    /// The node refused some of the consent files submitted (each named with its own code).
    SubmitRefused,
    /// The consortium directory is signed by another authority than the one the node pinned.
    AuthorityMismatch,
    /// A first consortium install needs `--authority` to pin.
    MissingAuthority,
    /// The libp2p network could not be used.
    NetworkFailed,
    /// No hospital answered a federated query.
    NoAnswers,
    /// The hospitals' answers could not be combined.
    CombineFailed,
    /// An encrypted query names an aggregator that is not a member.
    UnknownAggregator,
    /// An encrypted query was run without `--study`.
    MissingStudy,
    /// Some members did not install a published study key.
    PublishIncomplete,
    /// A key pair could not be generated or saved.
    KeygenFailed,
    /// The operating system's random source failed.
    RandomFailed,
    /// The async runtime could not start.
    RuntimeFailed,
    /// Writing to stdout failed for a reason other than a closed pipe.
    OutputFailed,
}

impl Code {
    /// Every code, in README's order.
    pub const ALL: [Code; 42] = [
        Code::ReadFailed,
        Code::TooLarge,
        Code::WriteFailed,
        Code::Exists,
        Code::BadKey,
        Code::BadPublicKey,
        Code::BadRole,
        Code::MissingKey,
        Code::WrongPatientKey,
        Code::BadQuery,
        Code::BadPolicy,
        Code::BadToken,
        Code::BadDirectory,
        Code::BadPseudonym,
        Code::BadAddress,
        Code::BadConfig,
        Code::BadCategory,
        Code::BadMode,
        Code::NodeOpenFailed,
        Code::StoreFailed,
        Code::InitFailed,
        Code::InstallFailed,
        Code::AdminChannelFailed,
        Code::AdminError,
        Code::ImportSourceEmpty,
        Code::ImportSourceUnreadable,
        Code::ImportFailed,
        Code::ImportIncomplete,
        Code::PolicyRefused,
        Code::SubmitRefused,
        Code::AuthorityMismatch,
        Code::MissingAuthority,
        Code::NetworkFailed,
        Code::NoAnswers,
        Code::CombineFailed,
        Code::UnknownAggregator,
        Code::MissingStudy,
        Code::PublishIncomplete,
        Code::KeygenFailed,
        Code::RandomFailed,
        Code::RuntimeFailed,
        Code::OutputFailed,
    ];

    /// The stable string scripts match on (`error[read_failed]: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ReadFailed => "read_failed",
            Code::TooLarge => "too_large",
            Code::WriteFailed => "write_failed",
            Code::Exists => "exists",
            Code::BadKey => "bad_key",
            Code::BadPublicKey => "bad_public_key",
            Code::BadRole => "bad_role",
            Code::MissingKey => "missing_key",
            Code::WrongPatientKey => "wrong_patient_key",
            Code::BadQuery => "bad_query",
            Code::BadPolicy => "bad_policy",
            Code::BadToken => "bad_token",
            Code::BadDirectory => "bad_directory",
            Code::BadPseudonym => "bad_pseudonym",
            Code::BadAddress => "bad_address",
            Code::BadConfig => "bad_config",
            Code::BadCategory => "bad_category",
            Code::BadMode => "bad_mode",
            Code::NodeOpenFailed => "node_open_failed",
            Code::StoreFailed => "store_failed",
            Code::InitFailed => "init_failed",
            Code::InstallFailed => "install_failed",
            Code::AdminChannelFailed => "admin_channel_failed",
            Code::AdminError => "admin_error",
            Code::ImportSourceEmpty => "import_source_empty",
            Code::ImportSourceUnreadable => "import_source_unreadable",
            Code::ImportFailed => "import_failed",
            Code::ImportIncomplete => "import_incomplete",
            Code::PolicyRefused => "policy_refused",
            Code::SubmitRefused => "submit_refused",
            Code::AuthorityMismatch => "authority_mismatch",
            Code::MissingAuthority => "missing_authority",
            Code::NetworkFailed => "network_failed",
            Code::NoAnswers => "no_answers",
            Code::CombineFailed => "combine_failed",
            Code::UnknownAggregator => "unknown_aggregator",
            Code::MissingStudy => "missing_study",
            Code::PublishIncomplete => "publish_incomplete",
            Code::KeygenFailed => "keygen_failed",
            Code::RandomFailed => "random_failed",
            Code::RuntimeFailed => "runtime_failed",
            Code::OutputFailed => "output_failed",
        }
    }

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
    fn all_lists_every_variant_once() {
        // A variant missing from ALL would be missing from README's check:
        // this match has no wildcard, so a new variant fails to compile here
        // until it is given a place in ALL.
        let position = |code: Code| -> usize {
            match code {
                Code::ReadFailed => 0,
                Code::TooLarge => 1,
                Code::WriteFailed => 2,
                Code::Exists => 3,
                Code::BadKey => 4,
                Code::BadPublicKey => 5,
                Code::BadRole => 6,
                Code::MissingKey => 7,
                Code::WrongPatientKey => 8,
                Code::BadQuery => 9,
                Code::BadPolicy => 10,
                Code::BadToken => 11,
                Code::BadDirectory => 12,
                Code::BadPseudonym => 13,
                Code::BadAddress => 14,
                Code::BadConfig => 15,
                Code::BadCategory => 16,
                Code::BadMode => 17,
                Code::NodeOpenFailed => 18,
                Code::StoreFailed => 19,
                Code::InitFailed => 20,
                Code::InstallFailed => 21,
                Code::AdminChannelFailed => 22,
                Code::AdminError => 23,
                Code::ImportSourceEmpty => 24,
                Code::ImportSourceUnreadable => 25,
                Code::ImportFailed => 26,
                Code::ImportIncomplete => 27,
                Code::PolicyRefused => 28,
                Code::SubmitRefused => 29,
                Code::AuthorityMismatch => 30,
                Code::MissingAuthority => 31,
                Code::NetworkFailed => 32,
                Code::NoAnswers => 33,
                Code::CombineFailed => 34,
                Code::UnknownAggregator => 35,
                Code::MissingStudy => 36,
                Code::PublishIncomplete => 37,
                Code::KeygenFailed => 38,
                Code::RandomFailed => 39,
                Code::RuntimeFailed => 40,
                Code::OutputFailed => 41,
            }
        };
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(position(code), i, "{code} is out of place in Code::ALL");
        }
    }

    #[test]
    fn only_a_partial_import_exits_with_3() {
        for code in Code::ALL {
            let expected = if code == Code::ImportIncomplete { 3 } else { 1 };
            assert_eq!(code.exit_status(), expected, "{code}");
        }
    }
}
