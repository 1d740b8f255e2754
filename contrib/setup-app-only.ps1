<#
.SYNOPSIS
    Exchange Online side of app-only (client_credentials) access for xoauth2-proxy.

.DESCRIPTION
    Run in PowerShell 7 or Windows PowerShell 5.1 with the ExchangeOnlineManagement module, as an
    Exchange administrator. The Entra ID side comes first (README, "Client credentials"): an app
    registration with a secret or certificate, and admin consent for the application permissions
    the proxy uses (Office 365 Exchange Online: IMAP.AccessAsApp, POP.AccessAsApp,
    SMTP.SendAsApp; for sending through Graph, Microsoft Graph: Mail.Send, Mail.ReadWrite).

    The script
      1. registers the app's service principal in Exchange Online (New-ServicePrincipal),
      2. -ImapPop: gives it FullAccess to each mailbox, which IMAP and POP3 need
         (Add-MailboxPermission),
      3. -GraphSend: limits the Graph permissions Mail.Send and Mail.ReadWrite to the members of
         one mail-enabled security group with RBAC for Applications (New-ManagementScope,
         New-ManagementRoleAssignment), adding the mailboxes to that group,
      4. shows what the app may do per mailbox (Test-ServicePrincipalAuthorization).

    Scoped Graph access replaces the tenant-wide consent: after step 3, remove the Graph
    Mail.Send / Mail.ReadWrite *application* consent from the app registration in Entra ID,
    or the app keeps access to every mailbox.

.EXAMPLE
    ./setup-app-only.ps1 -AppId 11111111-2222-3333-4444-555555555555 `
        -ObjectId 66666666-7777-8888-9999-000000000000 `
        -Mailboxes scanner@contoso.com, frontdesk@contoso.com -ImapPop -GraphSend `
        -ScopeGroup xoauth2-proxy-mailboxes@contoso.com
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    # Application (client) ID: the client_id in config.toml.
    [Parameter(Mandatory)] [string] $AppId,
    # Object ID of the *enterprise application* (service principal), not of the app registration.
    [Parameter(Mandatory)] [string] $ObjectId,
    # The mailboxes the proxy serves with this app.
    [Parameter(Mandatory)] [string[]] $Mailboxes,
    [string] $DisplayName = "xoauth2-proxy",
    [switch] $ImapPop,
    [switch] $GraphSend,
    # A mail-enabled security group; the Graph permissions apply to its members only.
    [string] $ScopeGroup,
    [string] $ScopeName = "xoauth2-proxy mailboxes"
)
$ErrorActionPreference = "Stop"

if ($GraphSend -and -not $ScopeGroup) {
    throw "-GraphSend needs -ScopeGroup: the mail-enabled security group that limits the app's Graph access"
}
if (-not (Get-Command Get-ServicePrincipal -ErrorAction SilentlyContinue)) {
    Import-Module ExchangeOnlineManagement
    Connect-ExchangeOnline
}

# 1. The service principal, once.
$principal = Get-ServicePrincipal -Identity $AppId -ErrorAction SilentlyContinue
if (-not $principal) {
    $principal = New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName $DisplayName
}
Write-Host "Service principal: $($principal.DisplayName) (AppId $AppId)"

# 2. IMAP and POP3 with client credentials need FullAccess on each mailbox.
if ($ImapPop) {
    foreach ($mailbox in $Mailboxes) {
        Add-MailboxPermission -Identity $mailbox -User $ObjectId -AccessRights FullAccess -InheritanceType All
        Write-Host "FullAccess on $mailbox"
    }
}

# 3. Graph sending, scoped with RBAC for Applications to the group's members.
if ($GraphSend) {
    $group = Get-DistributionGroup -Identity $ScopeGroup
    $members = @(Get-DistributionGroupMember -Identity $ScopeGroup | ForEach-Object { $_.PrimarySmtpAddress })
    foreach ($mailbox in $Mailboxes) {
        if ($members -notcontains $mailbox) {
            Add-DistributionGroupMember -Identity $ScopeGroup -Member $mailbox
        }
    }
    if (-not (Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue)) {
        New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter "MemberOfGroup -eq '$($group.DistinguishedName)'"
    }
    foreach ($role in "Application Mail.Send", "Application Mail.ReadWrite") {
        New-ManagementRoleAssignment -App $AppId -Role $role -CustomResourceScope $ScopeName
        Write-Host "$role for the members of $ScopeGroup"
    }
}

# 4. What the app may do now (changes can take up to an hour to reach every server).
foreach ($mailbox in $Mailboxes) {
    Write-Host "`n$mailbox"
    Test-ServicePrincipalAuthorization -Identity $AppId -Resource $mailbox | Format-Table
}
