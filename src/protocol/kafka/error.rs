//! The one error type of the Kafka codec, for decoding and encoding alike.
//!
//! Every variant carries the numbers needed to tell what went wrong without the input at hand.
//! A decode error means the frame is not a valid request of the version it claims: the server
//! answers [`KafkaCodecError::UnknownApi`] and [`KafkaCodecError::UnsupportedVersion`] (they
//! carry the correlation id for that purpose) and closes the connection on anything else, as
//! Kafka does.

/// Why bytes are not a Kafka message, or a value cannot be encoded as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaCodecError {
    /// The input ended inside a fixed-size field.
    #[error("truncated: {needed} bytes needed, {remaining} remaining")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length or an element count announces more than the remaining bytes can hold.
    #[error("length {length} exceeds what {remaining} remaining bytes can hold")]
    LengthTooLarge {
        /// The announced length (bytes) or count (elements).
        length: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A negative length other than -1 (null).
    #[error("invalid length {0}")]
    InvalidLength(i64),
    /// A varint longer than its type allows.
    #[error("invalid varint")]
    InvalidVarint,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A null where the field's version does not allow one (decoding).
    #[error("field `{field}` is null, which version {version} does not allow")]
    UnexpectedNull {
        /// The field.
        field: &'static str,
        /// The message version.
        version: i16,
    },
    /// A null to encode where the field's version does not allow one.
    #[error("field `{field}` cannot be null in version {version}")]
    NullNotAllowed {
        /// The field.
        field: &'static str,
        /// The message version.
        version: i16,
    },
    /// A string, byte field or array too long for its length prefix.
    #[error("value of {length} bytes or elements too long for its length prefix")]
    TooLong {
        /// Its length.
        length: usize,
    },
    /// An API key this codec does not know.
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApi {
        /// The API key of the request.
        api_key: i16,
        /// The request's correlation id, to answer it.
        correlation_id: i32,
    },
    /// A known API in a version this codec does not decode.
    #[error("API {api_key} version {version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The requested version.
        version: i16,
        /// The request's correlation id (0 where no request header is involved).
        correlation_id: i32,
    },
    /// A response to decode or encode whose API differs from the one expected.
    #[error("response of API {found} where API {expected} was expected")]
    ApiMismatch {
        /// The API the caller named.
        expected: i16,
        /// The API of the value.
        found: i16,
    },
    /// A frame length prefix above the configured maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl KafkaCodecError {
    /// Names the field a null-related error is about; other errors pass unchanged.
    pub(crate) fn in_field(self, name: &'static str) -> Self {
        match self {
            KafkaCodecError::UnexpectedNull { version, .. } => KafkaCodecError::UnexpectedNull {
                field: name,
                version,
            },
            KafkaCodecError::NullNotAllowed { version, .. } => KafkaCodecError::NullNotAllowed {
                field: name,
                version,
            },
            other => other,
        }
    }
}

/// The codec's result type.
pub type Result<T, E = KafkaCodecError> = std::result::Result<T, E>;
