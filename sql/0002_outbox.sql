-- Events waiting for the relay to publish them to the events topic. Rows are written in the
-- transaction that decided the operation (or created the wallet) and deleted once published;
-- for one wallet, ids follow commit order because its row lock serialises the writers.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid        NOT NULL,
    wallet_id  uuid        NOT NULL,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL
);
