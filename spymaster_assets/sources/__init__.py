"""Where raw DBN files come from: the embedded synthetic market, a local DBN directory, or Databento's API."""
