// Runs once, when the mongo-data volume is empty (docker-entrypoint-initdb.d): the
// database user nft-fw's workers log in as, allowed to read and write its database only.
const name = process.env.NFT_FW_DB_NAME || "nft_fw";
const user = process.env.NFT_FW_DB_USER || "nft";
const pwd = process.env.NFT_FW_DB_PASSWORD;
if (!pwd) {
  throw new Error("NFT_FW_DB_PASSWORD is empty: set it in docker/.env, then remove the mongo-data volume and start again");
}
db.getSiblingDB("admin").createUser({ user, pwd, roles: [{ role: "readWrite", db: name }] });
print(`created database user ${user} (readWrite on ${name})`);
