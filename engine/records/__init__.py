"""Call records: what each call did and cost, kept in a database written off the hot path."""
