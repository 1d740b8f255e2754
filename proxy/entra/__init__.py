"""OAuth2 against Microsoft Entra ID, with no Twisted in it: the token client, its answers, the
client assertion, AADSTS explanations, and the interactive sign-ins of `account add`."""
