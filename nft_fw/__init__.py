"""nft-fw"""
