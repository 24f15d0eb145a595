//! Diesel table definitions, shared by both backends (the SQL lives in `migrations/`).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        display_name -> Text,
        password_hash -> Text,
        role -> Text,
        account_status -> Text,
        is_online -> Bool,
        last_seen -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        token_gen -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        token_hash -> Text,
        family -> Text,
        access_jti -> Text,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        user_id -> BigInt,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    presence_log (id) {
        id -> BigInt,
        user_id -> BigInt,
        at -> Timestamp,
        is_online -> Bool,
        reason -> Text,
        coalesced -> Integer,
    }
}

diesel::table! {
    trainer_clients (trainer_id, member_id) {
        trainer_id -> BigInt,
        member_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    conversations (id) {
        id -> BigInt,
        user_low -> BigInt,
        user_high -> BigInt,
        last_seq -> BigInt,
        created_at -> Timestamp,
        last_message_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    conversation_members (conversation_id, user_id) {
        conversation_id -> BigInt,
        user_id -> BigInt,
        last_read_seq -> BigInt,
    }
}

diesel::table! {
    files (id) {
        id -> BigInt,
        owner_id -> BigInt,
        content_type -> Text,
        size -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    messages (id) {
        id -> BigInt,
        conversation_id -> BigInt,
        seq -> BigInt,
        sender_id -> BigInt,
        content -> Text,
        attachment_id -> Nullable<BigInt>,
        client_msg_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    checkins (id) {
        id -> BigInt,
        member_id -> BigInt,
        location -> Nullable<Text>,
        notes -> Nullable<Text>,
        checked_in_at -> Timestamp,
        checked_out_at -> Nullable<Timestamp>,
        auto_closed -> Bool,
        idempotency_key -> Nullable<Text>,
        created_by -> BigInt,
    }
}

diesel::table! {
    attendance (id) {
        id -> BigInt,
        employee_id -> BigInt,
        status -> Text,
        date -> Date,
        timestamp -> Timestamp,
        device -> Nullable<Text>,
        is_late -> Bool,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    checkin_codes (user_id) {
        user_id -> BigInt,
        code -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(presence_log -> users (user_id));
diesel::joinable!(conversation_members -> conversations (conversation_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(checkins -> users (member_id));
diesel::joinable!(attendance -> users (employee_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    refresh_tokens,
    revoked_tokens,
    presence_log,
    trainer_clients,
    conversations,
    conversation_members,
    files,
    messages,
    checkins,
    attendance,
    checkin_codes,
);
