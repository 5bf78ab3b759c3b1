//! `kafka_struct!`: one declarative description per message struct generates the struct and
//! its wire code.
//!
//! ```text
//! kafka_struct! {
//!     /// What the struct is.
//!     pub struct MetadataRequest {
//!         topics: Option<Vec<MetadataRequestTopic>> [0..] null 1,
//!         allow_auto_topic_creation: bool [4..] = true,
//!         include_cluster_authorized_operations: bool [8..10],
//!     }
//! }
//! ```
//!
//! Each field is `name: Type [min..max]` (`[min..]` when still present in the newest version),
//! then optionally `null N` (nullable from version N), `tag T` (a tagged field with tag T,
//! written only when its value differs from its default), and `= default` (Kafka's default for
//! the field when absent; otherwise [`Default::default`]). The Rust type chooses the encoding
//! (see [`Wire`](super::wire::Wire)); the version decides classic or compact forms.
//!
//! Generated: the struct (pub fields, `Debug`, `Clone`, `PartialEq`, a `Default` with the
//! declared defaults) and its `Wire` impl. Decoding reads the fields present in the version in
//! order, leaving the others at their defaults, then (flexible versions) the tagged-field
//! section, skipping unknown tags. Encoding writes the present fields and, in flexible versions,
//! the tagged fields whose values are not their defaults, in the order declared (which must be
//! ascending tag order). `example` fills every present field with a non-default sample value.

/// Generates a message struct and its [`Wire`](super::wire::Wire) impl; see the module docs.
macro_rules! kafka_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty [ $min:literal .. $($max:literal)? ]
                    $(null $nmin:literal)? $(tag $tag:literal)? $(= $def:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[doc = concat!(
                    "\n\nOn the wire in versions ", stringify!($min), "..", $(stringify!($max),)?
                    $("; nullable from version ", stringify!($nmin),)?
                    $("; tagged field ", stringify!($tag),)?
                    $("; default `", stringify!($def), "`",)?
                    "."
                )]
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: kafka_struct!(@default $($def)?),)*
                }
            }
        }

        impl $crate::protocol::kafka::wire::Wire for $name {
            #[allow(unused_variables, unused_mut)]
            fn min_size(ctx: $crate::protocol::kafka::wire::Ctx) -> usize {
                let mut size = usize::from(ctx.flexible);
                $(
                    if kafka_struct!(@tag $($tag)?).is_none()
                        && kafka_struct!(@present ctx.version, $min, $($max)?)
                    {
                        let c = ctx.with_nullable(kafka_struct!(@nullable ctx.version, $($nmin)?));
                        size += <$ty as $crate::protocol::kafka::wire::Wire>::min_size(c);
                    }
                )*
                size
            }

            #[allow(unused_variables, unused_mut)]
            fn read(
                r: &mut $crate::protocol::kafka::wire::Reader,
                ctx: $crate::protocol::kafka::wire::Ctx,
            ) -> $crate::protocol::kafka::error::Result<Self> {
                let mut this = Self::default();
                $(
                    if kafka_struct!(@tag $($tag)?).is_none()
                        && kafka_struct!(@present ctx.version, $min, $($max)?)
                    {
                        let c = ctx.with_nullable(kafka_struct!(@nullable ctx.version, $($nmin)?));
                        this.$field = <$ty as $crate::protocol::kafka::wire::Wire>::read(r, c)
                            .map_err(|e| e.in_field(stringify!($field)))?;
                    }
                )*
                if ctx.flexible {
                    r.tagged_fields(|tag, field| {
                        $(
                            if kafka_struct!(@tag $($tag)?) == Some(tag)
                                && kafka_struct!(@present ctx.version, $min, $($max)?)
                            {
                                let c = ctx.with_nullable(
                                    kafka_struct!(@nullable ctx.version, $($nmin)?),
                                );
                                this.$field =
                                    <$ty as $crate::protocol::kafka::wire::Wire>::read(field, c)
                                        .map_err(|e| e.in_field(stringify!($field)))?;
                            }
                        )*
                        Ok(())
                    })?;
                }
                Ok(this)
            }

            #[allow(unused_variables, unused_mut)]
            fn write(
                &self,
                w: &mut $crate::protocol::kafka::wire::Writer,
                ctx: $crate::protocol::kafka::wire::Ctx,
            ) -> $crate::protocol::kafka::error::Result<()> {
                $(
                    if kafka_struct!(@tag $($tag)?).is_none()
                        && kafka_struct!(@present ctx.version, $min, $($max)?)
                    {
                        let c = ctx.with_nullable(kafka_struct!(@nullable ctx.version, $($nmin)?));
                        <$ty as $crate::protocol::kafka::wire::Wire>::write(&self.$field, w, c)
                            .map_err(|e| e.in_field(stringify!($field)))?;
                    }
                )*
                if ctx.flexible {
                    let mut count = 0u32;
                    $(
                        if kafka_struct!(@tag $($tag)?).is_some()
                            && kafka_struct!(@present ctx.version, $min, $($max)?)
                        {
                            let default: $ty = kafka_struct!(@default $($def)?);
                            if self.$field != default {
                                count += 1;
                            }
                        }
                    )*
                    w.uvarint(count);
                    $(
                        if let Some(tag) = kafka_struct!(@tag $($tag)?) {
                            let default: $ty = kafka_struct!(@default $($def)?);
                            if kafka_struct!(@present ctx.version, $min, $($max)?)
                                && self.$field != default
                            {
                                let c = ctx.with_nullable(
                                    kafka_struct!(@nullable ctx.version, $($nmin)?),
                                );
                                let mut field = $crate::protocol::kafka::wire::Writer::new();
                                <$ty as $crate::protocol::kafka::wire::Wire>::write(
                                    &self.$field, &mut field, c,
                                )
                                .map_err(|e| e.in_field(stringify!($field)))?;
                                let size = u32::try_from(field.len()).map_err(|_| {
                                    $crate::protocol::kafka::error::KafkaCodecError::TooLong {
                                        length: field.len(),
                                    }
                                })?;
                                w.uvarint(tag);
                                w.uvarint(size);
                                w.append(field);
                            }
                        }
                    )*
                }
                Ok(())
            }

            #[allow(unused_variables, unused_mut)]
            fn example(seed: u32, ctx: $crate::protocol::kafka::wire::Ctx) -> Self {
                let mut this = Self::default();
                let mut s = seed.wrapping_mul(31);
                $(
                    s = s.wrapping_add(1);
                    if kafka_struct!(@present ctx.version, $min, $($max)?) {
                        let c = ctx.with_nullable(kafka_struct!(@nullable ctx.version, $($nmin)?));
                        let default: $ty = kafka_struct!(@default $($def)?);
                        let v = <$ty as $crate::protocol::kafka::wire::Wire>::example(s, c);
                        this.$field = if v == default {
                            <$ty as $crate::protocol::kafka::wire::Wire>::example(
                                s.wrapping_add(1),
                                c,
                            )
                        } else {
                            v
                        };
                    }
                )*
                this
            }
        }
        impl $crate::protocol::kafka::wire::Wire for Option<$name> {
            fn min_size(_: $crate::protocol::kafka::wire::Ctx) -> usize {
                1
            }
            fn read(
                r: &mut $crate::protocol::kafka::wire::Reader,
                ctx: $crate::protocol::kafka::wire::Ctx,
            ) -> $crate::protocol::kafka::error::Result<Self> {
                $crate::protocol::kafka::wire::read_nullable_struct(r, ctx)
            }
            fn write(
                &self,
                w: &mut $crate::protocol::kafka::wire::Writer,
                ctx: $crate::protocol::kafka::wire::Ctx,
            ) -> $crate::protocol::kafka::error::Result<()> {
                $crate::protocol::kafka::wire::write_nullable_struct(self, w, ctx)
            }
            fn example(seed: u32, ctx: $crate::protocol::kafka::wire::Ctx) -> Self {
                $crate::protocol::kafka::wire::example_nullable_struct(seed, ctx)
            }
        }
    };

    (@default) => { Default::default() };
    (@default $def:expr) => { $def };
    (@tag) => { None::<u32> };
    (@tag $tag:literal) => { Some::<u32>($tag) };
    (@nullable $v:expr,) => { false };
    (@nullable $v:expr, $nmin:literal) => { $v >= $nmin };
    (@present $v:expr, $min:literal,) => { $v >= $min };
    (@present $v:expr, $min:literal, $max:literal) => { $v >= $min && $v <= $max };
}

pub(crate) use kafka_struct;
