-- Leadership among replicas (store/src/leadership.rs): each turn of a role's leader (the
-- settlement service) gets the next epoch, which the leader journals so the engine refuses an
-- earlier leader's commands. Only PostgreSQL elects leaders (an advisory lock); the table is
-- here too so both engines keep the same schema.
CREATE TABLE leader_epochs (
    role TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL
);
