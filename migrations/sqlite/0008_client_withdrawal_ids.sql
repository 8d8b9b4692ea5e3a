-- The client withdrawal id a withdrawal was requested under (retries of it are refused).
ALTER TABLE withdrawals ADD COLUMN client_withdrawal_id TEXT;
